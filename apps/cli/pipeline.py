"""`emoverse run`, `ingest`, `tag` and `train`: the Prefect flows, every input checked before a
flow starts (bad input costs no server start), and their results printed."""

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from emoverse import settings as env
from emoverse.emotions import LABELS, model_name
from emoverse.errors import EmoverseError
from emoverse.paths import RunPaths
from emoverse.settings import parse_ids
from models.config import TrainingSettings, setting_error

TERMINATE_GRACE_S = 5.0  # after SIGTERM: Prefect records the flow run as crashed


def run_stage(args: argparse.Namespace, paths: RunPaths, data_dir: Path) -> bool:
    """Run the command's flow and print what it made; False when a stage failed (Prefect has
    logged why)."""
    if args.command == "tag" and args.report:  # reads the manifest: no flow, no server
        from emoverse.tagging import tag_report

        print(tag_report(paths.partitions))
        return True

    mirror, ids, catalog, settings = None, None, None, None
    if args.command in ("run", "ingest"):
        mirror, ids, catalog = _books(args)
    if args.command in ("run", "train"):
        settings = training_settings(args)

    from emoverse.runlock import data_dir_lock

    def waiting(line: str) -> None:
        print(f"emoverse: {line}", file=sys.stderr, flush=True)

    with _terminate_promptly(), data_dir_lock(data_dir, on_wait=waiting):
        return _run_flows(args, data_dir, mirror, ids, catalog, settings)


def _run_flows(
    args: argparse.Namespace,
    data_dir: Path,
    mirror: str | None,
    ids: list[int] | None,
    catalog: Path | None,
    settings: TrainingSettings | None,
) -> bool:
    """The flow commands, under the data dir's lock."""
    try:
        _start_prefect_server()
    except RuntimeError:  # Prefect's own words ("Timed out while attempting to connect ...")
        raise _server_did_not_start() from None
    # Prefect: see apps/cli/__init__.
    from flows.corpus import ingest, tag
    from flows.pipeline import pipeline
    from flows.training import train_by_mode

    _hide_tracebacks_of_user_errors()
    data = str(data_dir)
    try:
        if args.command == "ingest":
            result = ingest(data, mirror, ids, _str(catalog), args.max_parallel)
            _print_ingest(result)
            if args.report:
                from emoverse.corpus import ingest_report

                print(ingest_report(Path(result["path"]).parent))
        elif args.command == "tag":
            _print_counts(
                tag(
                    data,
                    min_hits=args.min_hits,
                    min_margin=args.min_margin,
                    lemmatize=args.lemmatize,
                    negation=args.negation,
                    workers=args.workers,
                )
            )
        elif args.command == "train":
            _print_training(train_by_mode(data, settings, args.mode))
        else:
            result = pipeline(
                data, mirror, ids, _str(catalog), args.max_parallel, settings, args.mode
            )
            _print_ingest(result["ingest"])
            _print_counts(result["partitions"])
            _print_training(result)
    except EmoverseError:
        raise
    except RuntimeError as exc:  # a stage failed; Prefect has logged the details above
        if _EPHEMERAL_TIMEOUT in str(exc):
            raise _server_did_not_start() from None
        print(f"emoverse: failed: {exc}", file=sys.stderr)
        return False
    return True


# How long Prefect's temporary server may take to start (`main` sets the default), and what
# Prefect's RuntimeError says when it did not answer in time.
STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 120
_EPHEMERAL_TIMEOUT = "attempting to connect to ephemeral Prefect API server"


def _server_did_not_start() -> EmoverseError:
    waited = os.environ.get(STARTUP_TIMEOUT_SETTING, "20")
    return EmoverseError(
        f"Prefect's temporary server did not start within {waited} s (a busy machine?); "
        f"allow it longer with {STARTUP_TIMEOUT_SETTING}=300, or start one with `prefect "
        "server start` and point the commands at it: PREFECT_API_URL=http://127.0.0.1:4200/api"
    )


def training_settings(args: argparse.Namespace) -> TrainingSettings:
    """The training flags given, checked by TrainingSettings itself."""
    given = {
        name: value
        for name in TrainingSettings.model_fields
        if (value := getattr(args, name, None)) is not None
    }
    try:
        return TrainingSettings(**given)
    except ValidationError as exc:
        raise setting_error(exc) from None


def _start_prefect_server() -> None:
    """Start the temporary Prefect server (when no PREFECT_API_URL names one) one process at
    a time: two starting together race on the shared Prefect database's migrations."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    if PREFECT_API_URL.value():
        return
    from filelock import FileLock
    from prefect.server.api.server import SubprocessASGIServer

    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / "emoverse-server-start.lock")):
        # `main` made the limit STARTUP_TIMEOUT_S unless the user set one: a first start
        # migrates a new database, which on a busy machine outlasts Prefect's 20 s default.
        SubprocessASGIServer().start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())


@contextlib.contextmanager
def _terminate_promptly() -> Iterator[None]:
    """SIGTERM ends the process within TERMINATE_GRACE_S. Inside a flow Prefect's own
    handler turns it into a crash of the run, and would then wait for every worker thread (a
    download dripping for minutes, a training); a watcher thread, woken by the signal itself
    (`signal.set_wakeup_fd`, whoever's handler runs), gives Prefect the grace to record the
    crash and then ends the process. Every write is atomic, so stopping here keeps what
    SIGKILL keeps: whole files, one registry transaction or none, the data dir's lock
    released."""
    import signal
    import socket
    import threading
    import time

    def finish(signum: int) -> None:
        print("emoverse: terminated", file=sys.stderr, flush=True)
        try:
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().stop()  # atexit hooks do not run after os._exit
        except Exception:
            pass
        os._exit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: finish(signum))
    except ValueError:  # not the main thread (an embedding program's): its own handling
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                woken = reader.recv(64)
            except OSError:
                return
            if not woken:
                return
            if signal.SIGTERM in woken:
                time.sleep(TERMINATE_GRACE_S)
                finish(signal.SIGTERM)

    threading.Thread(target=watch, name="emoverse-sigterm", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, previous)
        writer.close()
        reader.close()


def _books(args: argparse.Namespace) -> tuple[str, list[int], Path | None]:
    """The mirror, the ids and the catalog of `run` and `ingest`, checked."""
    from emoverse.corpus import check_mirror, poetry_ids_from_catalog

    mirror = args.mirror or env.mirror()
    catalog = args.catalog
    if catalog is not None and not catalog.is_file():
        raise EmoverseError(f"catalog file {catalog} does not exist")
    if args.ids is not None:  # given, even empty: `--ids ""` is no ids, not the default list
        ids = parse_ids(args.ids)
    elif catalog is not None:
        ids = poetry_ids_from_catalog(catalog)
    else:
        ids = env.curated_ids()
    check_mirror(mirror)
    return mirror, ids, catalog


def _str(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _print_ingest(result: dict) -> None:
    print(f"{result['poems']} poems from {result['books']} books -> {result['path']}")
    print(
        f"{result['rejected_books']} books rejected ({result['rejects']} reject rows) -> "
        f"{result['rejects_path']}; {result['fetched']} downloaded, "
        f"{result['from_cache']} from the cache"
    )


def _print_counts(counts: dict[str, int]) -> None:
    total = max(1, sum(counts.values()))
    print("poems per partition:")
    for label in LABELS:
        print(f"  {label:<13}{counts.get(label, 0):>7}  {counts.get(label, 0) / total:6.1%}")


def _print_training(result: dict) -> None:
    for emotion, version in result["registered"].items():
        role = "champion" if emotion in result["champions"] else "not champion"
        print(f"{model_name(emotion)} v{version} ({role}): {result['promotion'][emotion]}")
    for emotion, reason in result["skipped"].items():
        print(f"skipped {emotion}: {reason}")


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs every failed task with its traceback. For bad input (an EmoverseError)
    the message says all there is to say; real bugs keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EmoverseError):
            record.exc_info = None
            record.exc_text = None
        return True


def _hide_tracebacks_of_user_errors() -> None:
    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_UserErrorsWithoutTraceback())
