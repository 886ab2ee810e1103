"""Shared fixtures."""

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared, read-only mirror next to the repository (never copied into it).
GUTENBERG_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "gutenberg"

# Before Prefect or transformers are imported: no telemetry, nothing from a hub.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # registries live in each test's own folder


@pytest.fixture(scope="session")
def gutenberg_dir() -> Path:
    if not (GUTENBERG_DIR / "cache" / "epub").is_dir():
        pytest.fail(f"the shared Gutenberg mirror is missing at {GUTENBERG_DIR}")
    return GUTENBERG_DIR


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for every flow test (each start costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would bury the test output


@pytest.fixture(scope="session")
def gutenberg_server() -> Iterator[str]:
    """Base URL of a real loopback HTTP server over the shared mirror (site layout)."""
    handler = functools.partial(_QuietHandler, directory=str(GUTENBERG_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
