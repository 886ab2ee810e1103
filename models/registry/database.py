"""Where the registry's database lives and whether it can be read: the sqlite file under a
data dir (or `MLFLOW_TRACKING_URI`), checked before MLflow opens it, because MLflow would
create a missing file, lay a fresh schema over an emptied one, or fail page by page on a
damaged one. A reader writes nothing, and a permission problem is not called damage."""

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from emoverse import settings
from emoverse.errors import EmoverseError, NoModelError
from emoverse.paths import RunPaths


def registry_uri(data_dir: Path, *, read_only: bool = False) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a sqlite file under the data dir (created for
    writers; a reader of a data dir without one gets a NoModelError and creates nothing)."""
    if uri := settings.tracking_uri():
        return uri
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise EmoverseError(f"data dir {data_dir} is a file, not a folder")
    db = RunPaths(data_dir).registry_db
    if read_only:
        if not data_dir.is_dir():
            raise NoModelError(f"data dir {data_dir} does not exist; run `emoverse run` first")
        if not db.is_file():
            raise NoModelError(f"no model registry under {data_dir}; run `emoverse run` first")
    else:
        db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def check_sqlite(db: Path) -> None:
    """A damaged database file fails here, whole, rather than on whichever page a query
    happens to read (a registry is small: the check takes milliseconds)."""
    if not db.is_file():
        return  # a new registry: MLflow creates it
    connection = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=60)
    try:
        result = connection.execute("PRAGMA quick_check").fetchone()
    finally:
        connection.close()
    if not result or result[0] != "ok":
        raise sqlite3.DatabaseError(f"quick_check: {result[0] if result else 'no answer'}")


def check_readable_registry(db: Path) -> None:
    """What a reader needs before MLflow opens a sqlite registry, which would otherwise
    create the file (and its folder) or lay a fresh schema over an emptied one: a reader
    writes nothing, and says what is wrong instead."""
    named = " (MLFLOW_TRACKING_URI)" if settings.tracking_uri() else ""
    if not db.is_file():
        raise NoModelError(
            f"no model registry database at {db}{named}; run `emoverse run` first, or point "
            "MLFLOW_TRACKING_URI at an existing registry"
            if named
            else f"no model registry database at {db}; run `emoverse run` first"
        )
    if not os.access(db, os.R_OK):
        raise EmoverseError(
            f"the model registry database {db}{named} cannot be read: permission denied (the "
            "file is not damaged); run as a user who may read it"
        )
    if db.stat().st_size == 0:
        raise EmoverseError(
            f"the model registry database {db}{named} is empty (0 bytes): its models are "
            "gone; restore it from a backup, or move it away and run `emoverse run` to "
            "register the models again"
        )
    connection = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=60)
    try:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError:
        return  # damage: the quick check that follows names it
    finally:
        connection.close()
    if "registered_models" not in tables:
        raise EmoverseError(
            f"the model registry database {db}{named} holds no MLflow registry (a sqlite file "
            "of something else); restore it from a backup, or move it away and run "
            "`emoverse run` to register the models again"
        )


def permission_problem(db: Path, exc: BaseException) -> str | None:
    """"read" or "written" when `exc` comes from permissions on a registry database (or its
    folder, where sqlite and the lock put their files), not from damage; else None."""
    text = str(exc).lower()
    said = isinstance(exc, PermissionError) or any(
        words in text for words in ("readonly database", "read-only", "permission denied")
    )
    folder_closed = not os.access(db.parent, os.W_OK | os.X_OK)
    if db.is_file() and not os.access(db, os.R_OK):
        return "read"
    closed = db.is_file() and (not os.access(db, os.W_OK) or folder_closed)
    if said or (closed and ("unable to open" in text or "lock" in text)):
        return "written"
    return None
