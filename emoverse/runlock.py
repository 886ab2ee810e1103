"""One writing run per data dir at a time, and a clear line when a data dir cannot be written.

`data_dir_lock` is held by every CLI command that runs flows (`run`, `ingest`, `tag`,
`train`): a second one on the same data dir waits for it, saying so, instead of racing the
first (two runs would retrain and re-register the same models, and used to die at start-up).
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from emoverse.errors import EmoverseError

LOCK_FILE = ".emoverse.lock"  # in the data dir; the holder's pid in LOCK_FILE + ".pid"


def check_writable(data_dir: Path) -> None:
    """An EmoverseError naming the data dir when it (or, not made yet, the folder it would be
    made in) cannot be written: a read-only mount, another user's folder."""
    probe = Path(data_dir).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise EmoverseError(
            f"cannot write to the data dir {data_dir} ({probe} is read-only or not yours); "
            "`generate`, `models` and `serve` read it as it is, or pass a writable --data-dir"
        )


@contextmanager
def data_dir_lock(data_dir: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the data dir's lock (creating the folder); when another run holds it, call
    `on_wait` with one line saying so, then wait for it."""
    data_dir = Path(data_dir)
    check_writable(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(data_dir / LOCK_FILE))
    owner = data_dir / (LOCK_FILE + ".pid")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            pid = owner.read_text().strip()
        except OSError:
            pid = "?"
        on_wait(
            f"another emoverse run (pid {pid}) is writing to {data_dir}; waiting for it to finish"
        )
        lock.acquire()
    try:
        with suppress(OSError):  # only what the message of a waiting run names
            owner.write_text(f"{os.getpid()}\n")
        yield
    finally:
        lock.release()
