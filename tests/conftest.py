"""Shared fixtures."""

import http.server
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror_server import running, serve_mirror

# Tests read the small mirror committed here (four books cut to a few poems, in the site's
# layout; `fixtures/build_mirror.py` rebuilds it) unless EMOVERSE_TEST_MIRROR names another.
FIXTURE_MIRROR = Path(__file__).resolve().parent / "fixtures" / "gutenberg"
GUTENBERG_DIR = Path(os.environ.get("EMOVERSE_TEST_MIRROR") or FIXTURE_MIRROR).resolve()
# Tests marked `full_mirror` need whole books or many of them: they read the shared, read-only
# mirror next to the repository (never copied into it), and skip where it is absent, except
# under CI (`CI` set), where they fail.
FULL_MIRROR = Path(
    os.environ.get("EMOVERSE_FULL_MIRROR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "gutenberg"
).resolve()

# Before Prefect or transformers are imported: no telemetry, nothing from a hub.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # registries live in each test's own folder


def _need_full_mirror() -> None:
    if not (FULL_MIRROR / "cache" / "epub").is_dir():
        message = f"the full Gutenberg mirror is missing at {FULL_MIRROR}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# Fixtures that make every test using them an end-to-end run: marked `slow` here, once.
SLOW_FIXTURES = {"prefect_harness"}  # flows run through Prefect's temporary server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"full_gutenberg_dir", "full_gutenberg_server"} & set(item.fixturenames):
            item.add_marker(pytest.mark.full_mirror)
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("full_mirror"):
        _need_full_mirror()


@pytest.fixture(scope="session")
def gutenberg_dir() -> Path:
    """The test mirror: the committed fixture, or the one EMOVERSE_TEST_MIRROR names."""
    if not (GUTENBERG_DIR / "cache" / "epub").is_dir():
        pytest.fail(f"the Gutenberg test mirror is missing at {GUTENBERG_DIR}")
    return GUTENBERG_DIR


@pytest.fixture(scope="session")
def full_gutenberg_dir() -> Path:
    """The whole shared mirror (its tests carry the `full_mirror` marker)."""
    _need_full_mirror()
    return FULL_MIRROR


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for every flow test (each start costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def gutenberg_server() -> Iterator[str]:
    """Base URL of a real loopback HTTP server over the test mirror (site layout)."""
    with serve_mirror(GUTENBERG_DIR) as server:
        yield server.url


@pytest.fixture(scope="session")
def full_gutenberg_server(full_gutenberg_dir) -> Iterator[str]:
    """Base URL of a real loopback HTTP server over the whole shared mirror."""
    with serve_mirror(full_gutenberg_dir) as server:
        yield server.url


class ScriptedMirror:
    """A real loopback HTTP server over the test mirror whose answers can be scripted per
    path, for fault tests. A script is a list of behaviours used one per request, the last one
    repeating: "ok" (the file, or 404 if the mirror lacks it), "500", "404", "403", "html"
    (an error page with status 200), "stall" (no answer for `stall_s`), "drop" (headers
    promising the whole file, half of it, then the connection closed), "endless" (a body
    without a length that never ends), "drip" (the file one byte every `drip_s`)."""

    def __init__(self, root: Path, stall_s: float = 2.0, drip_s: float = 0.2):
        self.root = root
        self.stall_s = stall_s
        self.drip_s = drip_s
        self.url = ""
        self.scripts: dict[str, list[str]] = {}
        self.extra: dict[str, bytes] = {}  # paths served as if the mirror had them
        self.requests: dict[str, int] = {}
        self.user_agents: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def script(self, path: str, *behaviours: str) -> None:
        self.scripts[path] = list(behaviours)

    def count(self, path: str) -> int:
        return self.requests.get(path, 0)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight = 0

    def _next(self, path: str) -> str:
        with self.lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            script = self.scripts.get(path)
            if not script:
                return "ok"
            return script.pop(0) if len(script) > 1 else script[0]

    def _body(self, path: str) -> bytes | None:
        if path in self.extra:
            return self.extra[path]
        file = (self.root / path).resolve()
        if self.root.resolve() not in file.parents or not file.is_file():
            return None
        return file.read_bytes()


def _scripted_handler(mirror: ScriptedMirror) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server would

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _client_hung_up_within(self, seconds: float) -> bool:
            # Polling the socket frees the handler as soon as the client times out, so that
            # in_flight counts only requests a client is still waiting on.
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.02)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return True
            return False

        def do_GET(self) -> None:
            path = self.path.lstrip("/").split("?")[0]
            with mirror.lock:
                mirror.in_flight += 1
                mirror.max_in_flight = max(mirror.max_in_flight, mirror.in_flight)
                mirror.user_agents.add(self.headers.get("User-Agent", ""))
            try:
                self._answer(path, mirror._next(path))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a stall past its read timeout)
            finally:
                with mirror.lock:
                    mirror.in_flight -= 1

        def _answer(self, path: str, behaviour: str) -> None:
            body = mirror._body(path)
            if behaviour == "stall":
                self.close_connection = True
                if not self._client_hung_up_within(mirror.stall_s):
                    self._send(503, b"too late")
            elif behaviour == "drop" and body is not None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif behaviour == "endless":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()  # no length: the body ends when the connection does
                self.close_connection = True
                chunk = b"Shall I compare thee to a summer's day?\n" * 1600
                while True:  # until the client hangs up (a broken pipe)
                    self.wfile.write(chunk)
            elif behaviour == "drip" and body is not None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.close_connection = True
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(mirror.drip_s)
            elif behaviour == "html":
                page = b"<!DOCTYPE html><html><body>Service unavailable</body></html>"
                self._send(200, page, "text/html; charset=utf-8")
            elif behaviour in ("500", "403", "404"):
                self._send(int(behaviour), f"error {behaviour}".encode())
            elif body is None:
                self._send(404, b"not found")
            else:
                self._send(200, body, "text/plain; charset=utf-8")

    return Handler


@pytest.fixture
def scripted_mirror(request: pytest.FixtureRequest) -> Iterator[ScriptedMirror]:
    """A fresh ScriptedMirror over the test mirror on 127.0.0.1 (fault tests); over the whole
    shared mirror for a test marked `full_mirror`."""
    full = request.node.get_closest_marker("full_mirror") is not None
    mirror = ScriptedMirror(FULL_MIRROR if full else GUTENBERG_DIR)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _scripted_handler(mirror))
    server.daemon_threads = True  # a stalled handler must not hold up the shutdown
    with running(server):
        host, port = server.server_address[:2]
        mirror.url = f"http://{host}:{port}"
        yield mirror


@pytest.fixture(scope="session")
def scratch_model(tmp_path_factory) -> Path:
    """One real, untrained `scratch:tiny` model folder (safetensors, tokenizer, card-less):
    what the registry logs as an MLflow model. Copy it with `link_model`."""
    from models.folders.model_folder import build_scratch_model

    texts = ["Shall I compare thee to a summer's day?\nThou art more lovely and more temperate"]
    return build_scratch_model("scratch:tiny", texts * 50, tmp_path_factory.mktemp("scratch") / "m")


def link_model(model: Path, folder: Path) -> Path:
    """A copy of a model folder whose files are hard links (no bytes copied)."""
    import shutil

    shutil.copytree(model, folder, copy_function=os.link)
    return folder
