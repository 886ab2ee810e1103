"""The real-server harness (tests/prefect_server.py): a `prefect server start`, a process work
pool, a throwaway project deployed with `prefect deploy --all`, a worker that runs it, and
everything stopped by PID afterwards, workers first."""

from pathlib import Path

import pytest
from prefect_server import group_alive, migrated_database, running_server, running_worker

FLOW = """
from prefect import flow
from prefect.artifacts import create_markdown_artifact


@flow
def hello(name: str = "world") -> str:
    create_markdown_artifact(f"hello {name}", key="hello")
    return name
"""

PREFECT_YAML = """
name: harness-check
prefect-version: 3.9.1
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ $PWD }}"
deployments:
  - name: hello
    entrypoint: hello_flow.py:hello
    work_pool:
      name: cpu
"""


@pytest.mark.slow
def test_a_worker_runs_a_deployment_on_a_real_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello_flow.py").write_text(FLOW)
    (project / "prefect.yaml").write_text(PREFECT_YAML)
    database = migrated_database(request.config.cache.mkdir("prefect-server"))

    with running_server(tmp_path / "prefect", database=database) as server:
        server.create_process_pool("cpu")
        server.cli("deploy", "--all", cwd=project)
        with server.client() as client:
            deployment = client.read_deployment_by_name("hello/hello")
        # `{{ $PWD }}` is resolved when deploying: the checkout `prefect deploy` ran in
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}
        ]

        with running_worker("cpu", env=server.env, cwd=project) as worker:
            run_id = server.run_deployment("hello/hello", {"name": "harness"})
            run = server.wait_for_flow_run(run_id, timeout=120)
            assert run.state is not None and run.state.is_completed(), worker.log_tail()
        assert not group_alive(worker.pid)

        artifacts = server.artifacts(run_id)
        assert [(a.key, a.data) for a in artifacts] == [("hello", "hello harness")]
    assert not group_alive(server.pid)
    assert not server.healthy()
