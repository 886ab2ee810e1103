"""Already done? Every stage names what it read by a key (`stage_key`) and reuses what an
earlier run with the same key left, building only what is missing (`reuse_or_build`).

Where the key is kept differs with what the stage writes: ingest records it beside the poems
(`already_done`, `write_record`); a tagged version keeps it in its manifest; a model folder
(foundation, child, conditional model, blend) is named by it; an evaluation keeps its inputs
beside its numbers in the model folder.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emoverse.atomic import atomic_path


def stage_key(inputs: Any, length: int | None = None) -> str:
    """The key of a stage's inputs: the sha256 of their JSON (keys sorted), in hex, its first
    `length` digits. Stored data is named by these keys: a change here redoes every stage."""
    blob = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def reuse_or_build(
    out: Path, build: Callable[[Path], object], *, done: Callable[[Path], bool]
) -> bool:
    """`out` as an earlier run left it when `done(out)`, else `build(out)` (which writes it
    whole); True when it was reused."""
    if done(out):
        return True
    build(out)
    return False


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path` (`{"key": ..., "summary": ...}`), if there is a readable one."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(path: Path, key: str, summary: dict[str, Any]) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps({"key": key, "summary": summary}, indent=1) + "\n", "utf-8")


def already_done(path: Path, key: str | None, *outputs: Path) -> dict[str, Any] | None:
    """The summary recorded at `path` when it was written for `key` and its `outputs` still
    exist; None when the work has to be done (no key: the inputs are not known yet)."""
    record = read_record(path)
    if key is None or record is None or record.get("key") != key:
        return None
    if not all(Path(p).exists() for p in outputs):
        return None
    return record["summary"]
