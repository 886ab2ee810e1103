"""The deployments of prefect.yaml on a real `prefect server start`, with a process worker for
the `cpu` pool and one for the `gpu` pool (on the CPU, scratch:tiny): the pipeline's eight
children run as `train-emotion` flow runs on the `gpu` pool, and the training trigger fires
on an `emoverse.partitions.updated` event."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect_server import group_alive, migrated_database, running_server, running_worker

from emoverse.emotions import EMOTIONS, LABELS
from models.registry.model_registry import CHAMPION, ModelRegistry

REPO = Path(__file__).resolve().parents[2]
BOOKS = [1041, 574, 1065, 12242]


@pytest.fixture(scope="module")
def gutenberg_server(full_gutenberg_server: str) -> str:
    """Whole books: the run's counts are those of the four reference books."""
    return full_gutenberg_server


def _flow_runs(client, deployment_name: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name]))
    )


def _emit(server, event: str, resource: dict, payload: dict) -> None:
    """Emit an event as another process would (the events client flushes on exit)."""
    code = (
        "import json, sys; from prefect.events import emit_event; "
        "emit_event(event=sys.argv[1], resource=json.loads(sys.argv[2]), "
        "payload=json.loads(sys.argv[3]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, event, json.dumps(resource), json.dumps(payload)],
        env=server.env,
        check=True,
        timeout=60,
    )


def test_the_run_forms_offer_choices_and_real_defaults():
    """The UI builds its run form from this schema: a choice where there is one, and a
    default shown rather than a "None" toggle wherever a setting has one."""
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import pipeline
    from flows.training import train_emotion

    schema = parameter_schema(pipeline).model_dump()
    settings = schema["definitions"]["TrainingSettings"]["properties"]
    assert settings["adapter"]["enum"] == ["full", "lora"]
    assert settings["adapter"]["default"] == "full"
    for name in ("foundation_epochs", "base_epochs", "child_epochs", "batch_size", "compile"):
        assert "anyOf" not in settings[name], name  # not "a value or null"
        assert settings[name]["default"] is not None, name
    assert schema["properties"]["settings"]["default"]["child_epochs"] == 4
    emotion = parameter_schema(train_emotion).model_dump()["definitions"]["Emotion"]
    assert emotion["enum"] == list(EMOTIONS)


@pytest.mark.slow
def test_the_deployed_pipeline_fans_out_to_the_gpu_pool(
    tmp_path, request, gutenberg_server, monkeypatch
):
    data_dir = tmp_path / "run"
    registry_uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    (tmp_path / "registry").mkdir()
    database = migrated_database(request.config.cache.mkdir("prefect-server"))
    quiet = {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}  # no cron runs mid-test
    with running_server(tmp_path / "prefect", database=database, env=quiet) as server:
        # The site's settings live on the pools, as the README says, not in any run's
        # parameters: the scheduled runs of a deployment have none.
        template = tmp_path / "process-pool.json"
        server.cli(
            "work-pool", "get-default-base-job-template", "--type", "process", "-f", str(template)
        )
        job = json.loads(template.read_text())
        job["variables"]["properties"]["env"]["default"] = {
            "EMOVERSE_GUTENBERG_MIRROR": gutenberg_server,
            "EMOVERSE_DATA_DIR": str(data_dir),
            "MLFLOW_TRACKING_URI": registry_uri,
        }
        template.write_text(json.dumps(job))
        for pool in ("cpu", "gpu"):
            server.cli(
                "work-pool",
                "create",
                pool,
                "--type",
                "process",
                "--base-job-template",
                str(template),
            )
        server.create_concurrency_limit("gpu", 1)  # one "GPU": trainings take turns
        t0 = time.monotonic()
        server.cli("deploy", "--all", cwd=REPO)
        print(f"\ndeploy: {time.monotonic() - t0:.0f} s")

        with server.client() as client:
            pipeline = client.read_deployment_by_name("pipeline/pipeline")
            assert [s.schedule.cron for s in pipeline.schedules] == ["0 3 * * 1"]
            child = client.read_deployment_by_name("train-emotion/train-emotion")
            assert child.work_pool_name == "gpu"
            # The UI's run form: an emotion picker and described settings.
            schema = child.parameter_openapi_schema
            assert schema["definitions"]["Emotion"]["enum"] == list(EMOTIONS)
            settings = schema["definitions"]["TrainingSettings"]["properties"]
            assert "description" in settings["max_steps"]

        started = time.monotonic()
        with (
            running_worker("cpu", env=server.env, cwd=REPO) as cpu,
            running_worker("gpu", env=server.env, cwd=REPO, limit=2) as gpu,
        ):
            run_id = server.run_deployment(
                "pipeline/pipeline", {"ids": BOOKS, "settings": {"max_steps": 2, "eval_samples": 4}}
            )
            run = server.wait_for_flow_run(run_id, timeout=600)  # two cores, shared
            logs = f"cpu worker:\n{cpu.log_tail()}\ngpu worker:\n{gpu.log_tail()}"
            assert run.state is not None and run.state.is_completed(), logs
        seconds = time.monotonic() - started
        assert not group_alive(cpu.pid) and not group_alive(gpu.pid)

        with server.client() as client:
            children = _flow_runs(client, "train-emotion")
            assert sorted(r.parameters["emotion"] for r in children) == sorted(EMOTIONS)
            for r in children:
                assert r.state.is_completed() and r.work_pool_name == "gpu"
                assert r.parent_task_run_id is not None  # linked to the pipeline's run
                assert r.name == f"train-{r.parameters['emotion']}"
                # Waiting for the gpu worker (two at a time) is queued, not Late.
                states = [st.name for st in client.read_flow_run_states(r.id)]
                assert "Late" not in states and "AwaitingGPU" in states, states
            names = {r.name for r in client.read_flow_runs(limit=200)}
            assert {f"pipeline-{len(BOOKS)} books", f"ingest-{len(BOOKS)} books"} <= names
            assert {"tag", "train-base"} <= names
            from prefect.events.filters import EventFilter, EventNameFilter

            ours = EventFilter(event=EventNameFilter(prefix=["emoverse."]))
            emitted = client.read_events(filter=ours, limit=50).events
        assert (data_dir / "poems" / "poems.parquet").is_file()  # the pool's data dir
        monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_uri)  # the pool's registry
        registry = ModelRegistry.for_data_dir(data_dir)
        records = {label: registry.current(label)[0] for label in LABELS}
        assert all(r.version == 1 for r in records.values())
        assert records["neutral"].aliases == [CHAMPION]
        for emotion in EMOTIONS:
            promoted = records[emotion].aliases == [CHAMPION]
            assert records[emotion].promotion.startswith("not promoted") != promoted

        with server.client() as client:  # this server has seen this run's tree only
            keys = {a.key for a in client.read_artifacts(limit=200)}
        # The pipeline's own page shows the family's versions and report.
        assert {"registry-versions", "family-report"} <= {a.key for a in server.artifacts(run_id)}
        assert {
            "label-distribution",
            "label-distribution-chart",
            "partition-samples",
            "registry-versions",
            "family-evaluation",
            "family-confusion-matrix",
        } | {f"loss-curve-{e}" for e in LABELS} | {f"samples-{e}" for e in LABELS} <= keys
        events = [e.event for e in emitted]
        assert events.count("emoverse.model.registered") == len(LABELS)
        (partitions_event,) = [e for e in emitted if e.event == "emoverse.partitions.updated"]
        # The pipeline trains right after tagging: its event must not start the trigger...
        assert partitions_event.resource["emoverse.training-follows"] == "true"
        assert _flow_runs_of(server, "train") == []

        # ...while new partitions from elsewhere (refresh-corpus, `emoverse tag`) do.
        _emit(
            server,
            "emoverse.partitions.updated",
            {"prefect.resource.id": "emoverse.partitions.x", "emoverse.training-follows": "false"},
            {"data_dir": "data/elsewhere"},
        )
        deadline = time.monotonic() + 30
        while not (triggered := _flow_runs_of(server, "train")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [r.parameters["data_dir"] for r in triggered] == ["data/elsewhere"]
    assert not group_alive(server.pid)
    print(f"\ndeployed pipeline with eight gpu-pool children: {seconds:.0f} s")


def _flow_runs_of(server, deployment_name: str) -> list:
    with server.client() as client:
        return _flow_runs(client, deployment_name)
