"""Running the app on uvicorn: `serve` until interrupted (`emoverse serve`), or `running_app`
from a background thread for the length of a `with` block (tests, the bench)."""

import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from apps.batcher import BatchSettings
from apps.server.app import create_app
from emoverse import settings

log = logging.getLogger("emoverse.serve")

SWITCH_INTERVAL_S = 0.0005  # the server process's GIL slice (Python's default: 0.005)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    batching: BatchSettings | None = None,
) -> None:
    """Serve until interrupted."""
    trusted = settings.trusted_hosts()
    if not is_loopback(host):
        log.warning("serving on %s: anyone who can reach it may generate; there is no auth", host)
        if not trusted:
            log.warning("set EMOVERSE_TRUSTED_HOSTS to the names clients use to reach it")
    app = create_app(data_dir, batching=batching, trusted_hosts=trusted)
    # Short GIL slices: the worker thread's many short torch calls then wait less for the
    # event loop (on 2 CPU cores, 16% more requests/s at 32 clients with scratch:tiny).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    uvicorn.Server(server_config(app, host=host, port=port, log_level="info")).run()


def server_config(app: FastAPI, **options: Any) -> Any:
    """uvicorn's settings: at most EMOVERSE_MAX_CONNECTIONS connections at once (more get a
    503), idle keep-alive connections closed after EMOVERSE_KEEPALIVE_S."""
    return uvicorn.Config(
        app,
        limit_concurrency=settings.max_connections(),
        timeout_keep_alive=settings.keepalive_s(),  # type: ignore[arg-type]
        **options,
    )


@contextmanager
def running_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` on uvicorn from a background thread for the duration of the block; yield its
    base URL. Port 0 takes a free one (tests, the bench)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
