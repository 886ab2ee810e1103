"""A real Prefect server and process workers as subprocesses, for end-to-end tests.

Everything runs on loopback in a temporary PREFECT_HOME with its own sqlite database, and
every process is started in its own session so that it can be stopped with its whole process
group by PID (workers before the server). Inspection goes through a `SyncPrefectClient` built
on the server's URL, so it is independent of whatever PREFECT_API_URL the test process has
(e.g. a `prefect_test_harness` session fixture).

    database = migrated_database(request.config.cache.mkdir("prefect-server"))  # optional
    with running_server(tmp_path / "prefect", database=database) as server:
        server.create_process_pool("cpu")          # or server.cli("work-pool", "create", ...)
        server.create_concurrency_limit("gpu", 1)  # or server.cli("gcl", "create", ...)
        server.cli("deploy", "--all", cwd=project)
        with running_worker("cpu", env=server.env, cwd=project) as worker:
            run_id = server.run_deployment("flow-name/deployment-name", {"param": 1})
            run = server.wait_for_flow_run(run_id, timeout=120)
            assert run.state and run.state.is_completed(), worker.log_tail()
        artifacts = server.artifacts(run_id)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import Artifact, FlowRun

PREFECT = str(Path(sys.executable).with_name("prefect"))  # the CLI of the running venv

# Settings for every process the harness starts (names checked against Prefect 3.9).
QUIET_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",  # the UI build is skipped at start
    "PREFECT_CLI_PROMPT": "false",
    "PREFECT_CLI_COLORS": "false",
    "PREFECT_CLI_WRAP_LINES": "false",
    "PREFECT_WORKER_QUERY_SECONDS": "1",  # default 10: a run waits up to that for a worker
    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, api_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process talking to the server at `api_url`: this process's
    environment without any PREFECT_* variable, then the harness's own settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(QUIET_SETTINGS)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )
    env.update(extra or {})
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_process(
    args: list[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start `args` in a new session (its own process group), stdout and stderr to `log`.
    PWD is set to `cwd`: Popen does not, and `{{ $PWD }}` in prefect.yaml reads it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            env={**env, "PWD": str(cwd)},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group led by `process`, SIGKILL it after `timeout` seconds, then
    SIGKILL whatever outlived it: members of the group and descendants in sessions of their
    own (a process worker starts each flow run with `start_new_session`)."""
    pgid = process.pid
    offspring = descendants(pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(10)
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for pid, started in offspring.items():
        if _start_time(pid) == started:  # the same process, not a reused PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """The live descendants of `pid` (Linux /proc), each with its start time."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = _start_time(child)
        if started is not None:
            found[child] = started
            todo += children.get(child, [])
    return found


def group_alive(pgid: int) -> bool:
    """Whether any process of the group `pgid` still exists (zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str] | None = None
) -> None:
    """Poll `check()` every 0.2 s until it is true (it may raise, e.g. on a dead process);
    after `timeout` seconds raise TimeoutError with `on_fail()` (e.g. a log tail) in it."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise TimeoutError(f"{what} not within {timeout:.0f} s\n{detail}")
        time.sleep(0.2)


@dataclass
class PrefectServer:
    """A running `prefect server start`; `env` is what its clients (CLI, workers) need."""

    home: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        return prefect_env(self.home, self.api_url)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `prefect <args>` against this server; on failure raise with its output."""
        cwd = cwd or self.home
        done = subprocess.run(
            [PREFECT, *args],
            env={**self.env, "PWD": str(cwd)},  # `{{ $PWD }}` in prefect.yaml reads this
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def client(self) -> SyncPrefectClient:
        """A synchronous client bound to this server (use it as a context manager)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def create_process_pool(self, name: str) -> None:
        """`prefect work-pool create <name> --type process`, without the CLI's ~3 s start."""
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        with self.client() as client:
            client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )

    def create_concurrency_limit(self, name: str, limit: int) -> None:
        """`prefect gcl create <name> --limit <limit>`, without the CLI's ~3 s start."""
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        with self.client() as client:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit)
            )

    def run_deployment(self, name: str, parameters: Mapping[str, object] | None = None) -> UUID:
        """Create a flow run of deployment `flow-name/deployment-name` now; its id."""
        with self.client() as client:
            deployment = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters=dict(parameters or {})
            )
        return run.id

    def artifacts(self, flow_run_id: UUID) -> list[Artifact]:
        """The artifacts that the flow run (or its tasks) created."""
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        flow_run = ArtifactFilterFlowRunId(any_=[flow_run_id])
        with self.client() as client:
            return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=flow_run))

    def wait_for_flow_run(self, flow_run_id: UUID, timeout: float = 180) -> FlowRun:
        """Poll until the flow run is in a final state; the run (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                run = client.read_flow_run(flow_run_id)
                if run.state is not None and run.state.is_final():
                    return run
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"flow run {flow_run_id} still {run.state_name} after {timeout:.0f} s"
                    )
                time.sleep(0.5)


def migrated_database(cache_dir: Path) -> Path:
    """An empty sqlite database with this Prefect version's migrations applied, made once in
    `cache_dir` (e.g. pytest's `config.cache.mkdir("prefect")`) and reused across sessions."""
    import prefect

    path = cache_dir / f"prefect-{prefect.__version__}.db"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f"{path.name}.{os.getpid()}.partial"
        partial.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as home:
            env = prefect_env(Path(home), "")
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{partial}"
            done = subprocess.run(
                [PREFECT, "server", "database", "upgrade", "-y"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"prefect server database upgrade failed\n{done.stdout}{done.stderr}"
            )
        os.replace(partial, path)  # atomic: concurrent sessions never see half a database
    return path


@contextlib.contextmanager
def running_server(
    home: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    database: Path | None = None,
    startup_timeout: float = 120,
) -> Iterator[PrefectServer]:
    """Start `prefect server start` on 127.0.0.1 with PREFECT_HOME=`home` (created; sqlite in
    it), wait for /api/health, yield it, and stop its process group on exit. `env` adds
    settings (e.g. PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED); `args` adds CLI flags such as
    "--no-services" (which also turns off triggers and the event persister); `database`, a
    file from `migrated_database`, is copied in first to skip the migrations (~12 s)."""
    home.mkdir(parents=True, exist_ok=True)
    if database is not None:
        shutil.copyfile(database, home / "prefect.db")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), *args]
    log = home / "server.log"
    process = start_process(command, env=prefect_env(home, api_url, env), cwd=home, log=log)
    server = PrefectServer(home=home, port=port, process=process, log=log)
    try:

        def died() -> str:
            return f"server log ({log}):\n{log_tail(log)}"

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"prefect server exited {process.returncode}\n{died()}")
            return server.healthy()

        wait_until(up, startup_timeout, "Prefect server healthy", died)
        yield server
    finally:
        stop_process_group(process)


@dataclass
class PrefectWorker:
    pool: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)


@contextlib.contextmanager
def running_worker(
    pool: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    extra_env: Mapping[str, str] | None = None,
    limit: int | None = None,
    log: Path | None = None,
    startup_timeout: float = 60,
) -> Iterator[PrefectWorker]:
    """Start `prefect worker start --pool <pool> --type process` in `cwd`, wait for it to
    report that it started, yield it, and stop it (its group and its flow runs) on exit; exit
    this before the server's context. `env` is `server.env`. A flow run starts in `cwd` unless
    the deployment's pull steps move it (`{{ $PWD }}` there is fixed at deploy time)."""
    command = [PREFECT, "worker", "start", "--pool", pool, "--type", "process"]
    command += ["--name", f"{pool}-{os.getpid()}"]
    if limit is not None:
        command += ["--limit", str(limit)]
    home = Path(env["PREFECT_HOME"])
    log = log or home / f"worker-{pool}.log"
    process = start_process(command, env={**env, **(extra_env or {})}, cwd=cwd, log=log)
    worker = PrefectWorker(pool=pool, process=process, log=log)
    try:

        def died() -> str:
            return f"worker log ({log}):\n{log_tail(log)}"

        def started() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"prefect worker exited {process.returncode}\n{died()}")
            return "started!" in log.read_text(errors="replace")

        wait_until(started, startup_timeout, f"worker for pool {pool!r} started", died)
        yield worker
    finally:
        stop_process_group(process)
