"""A sqlite registry whose data dir was moved or copied: MLflow stores absolute artifact
locations (experiments, runs, logged models, model versions, and the `folder` tag of each
version), which then name the old place. `relink` rewrites every one that lies under the old
data dir to the same place under the new one, in one transaction. `home_default_experiment`
keeps MLflow's own `Default` experiment beside the database too (MLflow puts it under
`./mlruns` of whichever process created the database), so that nothing names another place."""

import sqlite3
from pathlib import Path

from models.registry.mlflow_log import EXPERIMENT, local_path

# Every column in which MLflow's sqlite store keeps a location, with the rows that hold one.
LOCATIONS = (
    ("experiments", "artifact_location", ""),
    ("runs", "artifact_uri", ""),
    ("logged_models", "artifact_location", ""),
    ("model_versions", "source", ""),
    ("model_versions", "storage_location", ""),
    ("model_version_tags", "value", "WHERE key = 'folder'"),  # the registry's FOLDER_TAG
)
DEFAULT_EXPERIMENT_ID = 0


def stored_home(db: Path, home: Path, artifacts: Path) -> Path | None:
    """The data dir the registry's locations name (from its experiment's artifact location,
    which is `artifacts` relative to `home`), or None: no experiment yet, or a location that
    was not laid out by emoverse (left alone)."""
    connection = sqlite3.connect(db, timeout=60)
    try:
        row = connection.execute(
            "SELECT artifact_location FROM experiments WHERE name = ?", (EXPERIMENT,)
        ).fetchone()
    except sqlite3.OperationalError:  # a database MLflow has not set up yet
        return None
    finally:
        connection.close()
    if not row or not row[0]:
        return None
    stored = local_path(row[0])
    suffix = Path(artifacts).relative_to(home).parts
    if stored.parts[-len(suffix) :] != suffix:
        return None
    return Path(*stored.parts[: -len(suffix)])


def relink(db: Path, old: Path, new: Path) -> int:
    """Rewrite the locations under `old` to the same place under `new`; how many changed."""
    changed = 0
    connection = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        for table, column, where in LOCATIONS:
            rows = connection.execute(f"SELECT rowid, {column} FROM {table} {where}").fetchall()
            for rowid, value in rows:
                moved = _moved(value, str(old), str(new))
                if moved is not None:
                    connection.execute(
                        f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (moved, rowid)
                    )
                    changed += 1
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()
    return changed


def home_default_experiment(db: Path, artifacts: Path) -> bool:
    """Put MLflow's `Default` experiment's artifact location at `artifacts/0` (beside the
    database) when it names another place; whether it changed."""
    location = str(Path(artifacts) / str(DEFAULT_EXPERIMENT_ID))
    connection = sqlite3.connect(db, timeout=60)
    try:
        with connection:
            changed = connection.execute(
                "UPDATE experiments SET artifact_location = ? "
                "WHERE experiment_id = ? AND artifact_location IS NOT ?",
                (location, DEFAULT_EXPERIMENT_ID, location),
            ).rowcount
    except sqlite3.OperationalError:  # a database MLflow has not set up yet
        return False
    finally:
        connection.close()
    return changed > 0


def _moved(value: str | None, old: str, new: str) -> str | None:
    """`value` (a path or a file: URI) with the prefix `old` replaced by `new`, or None when
    it does not lie under `old`."""
    if not value:
        return None
    for scheme in ("", "file://"):
        prefix = scheme + old
        if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
            return scheme + new + value[len(prefix) :]
    return None
