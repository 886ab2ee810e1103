"""Already done? A stage records the key of what it read beside what it wrote; a later run
with the same key finds the work done and reuses it."""

import json
from pathlib import Path
from typing import Any

from emoverse.atomic import atomic_path


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
