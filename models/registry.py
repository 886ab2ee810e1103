"""The per-emotion model registry: one MLflow registered model `emoverse-<emotion>` per label,
each version pointing at a Hugging Face model folder, the current one under alias `champion`.

sqlite under `<data-dir>/registry/` by default; `MLFLOW_TRACKING_URI` points every flow, CLI
and API at a shared tracking server instead.
"""

import json
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from emoverse.emotions import LABELS, MODEL_PREFIX, check_label, model_name
from emoverse.errors import NoModelError
from emoverse.paths import RunPaths
from emoverse.stats import Share

CHAMPION = "champion"
PROMOTION_TAG = "promotion"  # why a version was, or was not, made champion
HUMAN_TAG = "human_accuracy"  # readers' blind guesses: a Share as JSON
HISTORY_TAG = "champion_history"  # versions that held the alias, oldest first


@dataclass(frozen=True)
class ModelRecord:
    emotion: str
    version: int
    path: str
    aliases: list[str]
    metrics: dict[str, Any]
    parent: str
    data_fingerprint: str
    created_ms: int
    promotion: str = ""  # the promotion gate's reason, for or against
    # Readers' blind guesses (emoverse serve's /judge): {k, n, share, low, high}, or None
    human_accuracy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def registry_uri(data_dir: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a sqlite file under the data dir."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    db = RunPaths(Path(data_dir)).registry_db
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


class ModelRegistry:
    def __init__(self, uri: str):
        from mlflow import MlflowClient  # heavy import: only when a registry is used

        # MLflow sets its loggers up on import and announces schema migrations at INFO.
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self.uri = uri
        # Opening a new sqlite store runs MLflow's schema migrations: one process at a time.
        with self._write_lock():
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> "ModelRegistry":
        return cls(registry_uri(data_dir))

    def register(
        self,
        emotion: str,
        model_dir: Path,
        *,
        metrics: dict[str, Any],
        parent: str,
        data_fingerprint: str,
        promote: bool = True,
        promotion: str = "",
    ) -> ModelRecord:
        """Add `model_dir` as a new version of the emotion's model; make it champion if
        `promote`. `promotion` records why it was (or was not) promoted.

        Idempotent: a folder already registered returns its existing version untouched, so a
        retried or cached run never adds a duplicate (nor takes the alias back after a
        rollback)."""
        from mlflow.exceptions import MlflowException

        name = model_name(check_label(emotion))
        source = str(Path(model_dir).resolve())
        with self._write_lock():
            if existing := self._version_with_source(name, source):
                return self.get(emotion, version=existing)
            try:
                self._client.create_registered_model(name, tags={"emotion": emotion})
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = self._client.create_model_version(
                name,
                source=source,
                tags={
                    "emotion": emotion,
                    "parent": parent,
                    "data_fingerprint": data_fingerprint,
                    "metrics": json.dumps(metrics),
                    PROMOTION_TAG: promotion,
                },
            )
            if promote:
                self._set_champion(name, int(version.version))
        return self.get(emotion, version=int(version.version))

    def _version_with_source(self, name: str, source: str) -> int | None:
        for mv in self._client.search_model_versions(f"name = '{name}'"):
            if mv.source == source:
                return int(mv.version)
        return None

    def record_human_accuracy(self, emotion: str, version: int, share: Share) -> None:
        """Keep the readers' accuracy on a version (a metric that grows with every answer)."""
        with self._write_lock():
            name = model_name(check_label(emotion))
            self._client.set_model_version_tag(
                name, str(version), HUMAN_TAG, json.dumps(share.to_dict())
            )

    def promote(self, emotion: str, version: int) -> ModelRecord:
        """Make `version` the emotion's champion."""
        self.get(emotion, version=version)  # a clear error for a version that does not exist
        with self._write_lock():
            self._set_champion(model_name(emotion), version)
        return self.get(emotion)

    def rollback(self, emotion: str) -> ModelRecord:
        """Give the champion alias back to the version that held it before."""
        name = model_name(check_label(emotion))
        with self._write_lock():
            history = self._champion_history(name)
            if len(history) < 2:
                raise NoModelError(f"{emotion} has no earlier champion to roll back to")
            history.pop()
            self._client.set_registered_model_alias(name, CHAMPION, str(history[-1]))
            self._client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        return self.get(emotion)

    def _set_champion(self, name: str, version: int) -> None:
        history = self._champion_history(name)
        self._client.set_registered_model_alias(name, CHAMPION, str(version))
        self._client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))

    def _champion_history(self, name: str) -> list[int]:
        tags = self._client.get_registered_model(name).tags or {}
        return json.loads(tags.get(HISTORY_TAG, "[]"))

    def _write_lock(self) -> AbstractContextManager:
        """sqlite takes one writer at a time, and MLflow's schema migrations and alias upsert
        race under concurrent writers (eight children finishing together): serialise writes
        across processes. A tracking server serialises its own."""
        if not self.uri.startswith("sqlite:///"):
            return nullcontext()
        return FileLock(self.uri.removeprefix("sqlite:///") + ".lock", timeout=300)

    def get(self, emotion: str, alias: str = CHAMPION, version: int | None = None) -> ModelRecord:
        """The version under `alias` (or the exact `version`) of the emotion's model."""
        from mlflow.exceptions import MlflowException

        name = model_name(check_label(emotion))
        try:
            if version is not None:
                mv = self._client.get_model_version(name, str(version))
            else:
                mv = self._client.get_model_version_by_alias(name, alias)
        except MlflowException:
            wanted = f"version {version}" if version is not None else f"alias {alias!r}"
            raise NoModelError(
                f"no {emotion} model with {wanted} in the registry at {self.uri}; "
                "run `emoverse run` (or `emoverse train`) first"
            ) from None
        return _record(mv)

    def current(self, emotion: str) -> tuple[ModelRecord, str | None]:
        """The model to use for `emotion`: its champion, else (no version passed the
        promotion gate) its newest version with a warning saying so."""
        try:
            return self.get(emotion), None
        except NoModelError:
            versions = self.list(emotion)
            if not versions:
                raise
        newest = versions[-1]
        reason = f" ({newest.promotion})" if newest.promotion else ""
        return newest, (
            f"{model_name(emotion)} has no champion; using its newest version "
            f"v{newest.version}, which was not promoted{reason}"
        )

    def list(self, emotion: str | None = None) -> list[ModelRecord]:
        """Every version, by emotion then version."""
        emotions = [check_label(emotion)] if emotion else list(LABELS)
        records: list[ModelRecord] = []
        for e in emotions:
            name = model_name(e)
            found = self._client.search_model_versions(f"name = '{name}'")
            if not found:
                continue
            # Search results leave aliases out; the registered model has them.
            aliases: dict[int, list[str]] = {}
            for alias, version in self._client.get_registered_model(name).aliases.items():
                aliases.setdefault(int(version), []).append(alias)
            records.extend(
                sorted(
                    (_record(mv, aliases.get(int(mv.version), [])) for mv in found),
                    key=lambda r: r.version,
                )
            )
        return records


def _record(mv: Any, aliases: list[str] | None = None) -> ModelRecord:
    tags = mv.tags or {}
    return ModelRecord(
        emotion=mv.name.removeprefix(MODEL_PREFIX),
        version=int(mv.version),
        path=mv.source,
        aliases=sorted(aliases if aliases is not None else mv.aliases or []),
        metrics=json.loads(tags.get("metrics", "{}")),
        parent=tags.get("parent", ""),
        data_fingerprint=tags.get("data_fingerprint", ""),
        created_ms=int(mv.creation_timestamp or 0),
        promotion=tags.get(PROMOTION_TAG, ""),
        human_accuracy=json.loads(tags[HUMAN_TAG]) if HUMAN_TAG in tags else None,
    )
