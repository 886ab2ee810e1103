"""Serve a local Gutenberg mirror folder over loopback HTTP, in the site's own layout.

Offline machines, tests and benchmarks point `--mirror` at it, so the same HTTP fetch code
runs as against the public site:

    python tests/mirror_server.py ../shared/gutenberg --port 8765
    emoverse run --mirror http://127.0.0.1:8765
"""

import argparse
import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

ServerT = TypeVar("ServerT", bound=http.server.HTTPServer)


class MirrorServer(http.server.ThreadingHTTPServer):
    """A threaded static file server that counts the GET requests it answers."""

    daemon_threads = True

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        super().__init__((host, port), handler)
        self.requests = 0
        self._count_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count_request(self) -> None:
        with self._count_lock:
            self.requests += 1


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    server: MirrorServer

    def do_GET(self) -> None:
        self.server.count_request()
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request would bury a run's own output


@contextmanager
def serve_mirror(folder: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[MirrorServer]:
    """Serve `folder` from a background thread for the duration of the block."""
    with running(MirrorServer(folder, host, port)) as server:
        yield server


@contextmanager
def running(server: ServerT) -> Iterator[ServerT]:
    """Run any HTTP server from a background thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a Gutenberg mirror folder over HTTP.")
    parser.add_argument("folder", type=Path, help="a folder in cache/epub/<id>/pg<id>.txt layout")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with serve_mirror(args.folder, args.host, args.port) as server:
        print(f"serving {args.folder} at {server.url} (Ctrl-C stops)", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
