"""The per-emotion model registry: one MLflow registered model `emoverse-<emotion>` per label,
the current version under alias `champion`.

Each version is a stock MLflow model (`models/registry/mlflow_log.py`): an MLflow run of experiment
`emoverse` with the training settings, metrics and evaluation, and a transformers-flavour
LoggedModel, so `mlflow.transformers.load_model("models:/emoverse-joy@champion")` and
`mlflow.pyfunc.load_model(...)` work. The project's own lookups (`ModelRecord.path`) use the
Hugging Face folder the version was registered from (kept in a tag): that folder is the
version's identity, where its checkpoints, card and evaluation cache live.

sqlite under `<data-dir>/registry/` by default, artifacts under `<data-dir>/registry/artifacts/`;
`MLFLOW_TRACKING_URI` points every flow, CLI and API at a shared tracking server instead.

MLflow (seconds to import) and the model-folder modules (transformers) load inside the methods
that use them, so that flows and read-only listings stay light.
"""

import functools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from filelock import FileLock

from emoverse import settings
from emoverse.emotions import (
    CONDITIONAL,
    LABELS,
    MODEL_PREFIX,
    NEUTRAL,
    check_label,
    check_model_key,
    model_name,
)
from emoverse.errors import EmoverseError, NoModelError
from emoverse.paths import RunPaths
from emoverse.stats import Share
from models.evaluation.promotion import gate_reasons
from models.records import Evaluation, lineage_version

CHAMPION = "champion"
PROMOTION_TAG = "promotion"  # why a version was, or was not, made champion
HUMAN_TAG = "human_accuracy"  # readers' blind guesses: a Share as JSON
PREFERRED_TAG = "preferred"  # which model an emotion's `--model best` uses, and why
HISTORY_TAG = "champion_history"  # versions that held the alias, oldest first
RELATIVE_TAG = "relative_path"  # the folder under the data dir (sqlite registries there)
FOLDER_TAG = "folder"  # the folder's absolute path (registries not under a data dir)
MODEL_ID_TAG = "model_id"  # the LoggedModel: `models:/<model_id>` (sqlite keeps no link)
ARTIFACTS_DIR = "artifacts"  # beside a sqlite database: the runs' and models' artifacts
WEIGHTS_TAG = "weights"  # {file: {size, sha256}} of the folder's weights at registration
PARENT_VERSION_TAG = "parent_version"  # the neutral base's version a child was trained from
# A remote tracking server that does not answer must fail in seconds, not minutes: MLflow's
# own settings, unless the environment sets them.
REMOTE_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
F = TypeVar("F", bound=Callable[..., Any])


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
    # The weights recorded at registration ({file: {size, sha256}}), checked on load
    weights: dict[str, Any] | None = None
    run_id: str = ""  # the MLflow run that logged it ("" for versions from before runs)
    model_id: str = ""  # its LoggedModel, `models:/<model_id>`
    # The registry version of the neutral base it was trained from (children); None for a
    # model trained from elsewhere (a foundation, a hub model)
    parent_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def evaluation(self) -> Evaluation | None:
        """Its evaluation against the neutral base (a family member), or None."""
        stored = self.metrics.get("evaluation")
        return Evaluation.from_dict(stored) if stored else None

    @property
    def evaluations(self) -> dict[str, Evaluation]:
        """The conditional model's evaluation as each emotion's model; empty for others."""
        stored = self.metrics.get("evaluations") or {}
        return {emotion: Evaluation.from_dict(e) for emotion, e in stored.items()}


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


def _check_sqlite(db: Path) -> None:
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


def _guarded(method: F) -> F:
    """A registry that cannot be read (a damaged database, a tracking server that does not
    answer) is one clear EmoverseError, not a traceback."""

    @functools.wraps(method)
    def guarded(self: "ModelRegistry", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except EmoverseError:
            raise
        except Exception as exc:
            raise self._unreadable(exc) from None

    return guarded  # type: ignore[return-value]


class ModelRegistry:
    def __init__(self, uri: str, *, data_dir: Path | None = None, read_only: bool = False):
        """`data_dir`: where a sqlite registry's folders live, stored relative to it (a copied
        data dir then uses its own models). `read_only`: no lock taken (a read-only data dir
        works), nothing created."""
        self.uri = uri
        self.read_only = read_only
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.relinked: tuple[Path, int] | None = None  # (the data dir it named, locations)
        self._experiment_id: str | None = None
        scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
        if scheme in ("http", "https", "databricks"):
            for name, value in REMOTE_DEFAULTS.items():
                os.environ.setdefault(name, value)
        try:
            from mlflow import MlflowClient  # heavy import: only when a registry is used

            # MLflow sets its loggers up on import and announces schema migrations at INFO.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
            # Opening a new sqlite store runs MLflow's schema migrations: one process at a time.
            with self._write_lock():
                if uri.startswith("sqlite:///"):
                    _check_sqlite(self._db)
                    if not read_only and self._db.is_file():
                        self._relink_if_moved()
                self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                if uri.startswith("sqlite:///"):
                    self._client.search_registered_models(max_results=1)  # opens the store
        except EmoverseError:
            raise
        except Exception as exc:
            raise self._unreadable(exc) from None

    @property
    def _db(self) -> Path:
        return Path(self.uri.removeprefix("sqlite:///"))

    @property
    def _home(self) -> Path:
        """What a sqlite registry's stored locations lie under: the data dir, else the
        database's folder."""
        return self.data_dir if self.data_dir is not None else self._db.resolve().parent

    def _relink_if_moved(self) -> None:
        """A data dir moved or copied elsewhere keeps working for stock MLflow loaders too:
        locations naming the old data dir are rewritten to this one (`emoverse models
        --relink` does it explicitly)."""
        from models.registry.relink import relink, stored_home

        artifacts = self._db.resolve().parent / ARTIFACTS_DIR
        old = stored_home(self._db, self._home, artifacts)
        if old is not None and old != self._home:
            self.relinked = (old, relink(self._db, old, self._home))

    def _experiment(self) -> str:
        """The `emoverse` experiment's id, created on first use; a sqlite registry keeps its
        artifacts beside its database (not ./mlruns wherever the process started)."""
        from models.registry.mlflow_log import EXPERIMENT

        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(EXPERIMENT)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                local = self.uri.startswith("sqlite:///")
                location = str(self._db.resolve().parent / ARTIFACTS_DIR) if local else None
                self._experiment_id = self._client.create_experiment(
                    EXPERIMENT, artifact_location=location
                )
        return self._experiment_id

    def _unreadable(self, exc: BaseException) -> EmoverseError:
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        if self.uri.startswith("sqlite:///"):
            db = self.uri.removeprefix("sqlite:///")
            return EmoverseError(
                f"the model registry database {db} cannot be read ({first}); restore it from "
                "a backup, or move it away and run `emoverse run` to register the models again"
            )
        return EmoverseError(
            f"the model registry at {self.uri} cannot be used ({first}); check "
            "MLFLOW_TRACKING_URI (a reachable http(s) tracking server, or sqlite:///<file>)"
        )

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, read_only: bool = False) -> "ModelRegistry":
        uri = registry_uri(data_dir, read_only=read_only)
        local = uri.startswith("sqlite:///") and not settings.tracking_uri()
        return cls(uri, data_dir=Path(data_dir) if local else None, read_only=read_only)

    def _relative(self, folder: Path) -> str | None:
        """`folder` relative to the data dir, when the registry lives there and so does it."""
        if self.data_dir is None:
            return None
        try:
            return Path(folder).resolve().relative_to(self.data_dir).as_posix()
        except ValueError:
            return None

    def _resolve(self, source: str, relative: str | None) -> str:
        """The folder a version names, read under the current data dir: its relative path,
        or (older versions, absolute only) the tail of a path that no longer exists."""
        if self.data_dir is None:
            return source
        if relative:
            return str(self.data_dir / relative)
        if Path(source).exists():
            return source
        parts = Path(source).parts
        for i in range(len(parts) - 1, -1, -1):
            if parts[i] == "models":
                candidate = self.data_dir.joinpath(*parts[i:])
                if candidate.exists():
                    return str(candidate)
        return source

    def register(
        self,
        emotion: str,
        model_dir: Path,
        *,
        metrics: dict[str, Any],
        parent: str,
        data_fingerprint: str,
        parent_version: int | None = None,
        promote: bool = True,
        promotion: str = "",
        params: Mapping[str, Any] | None = None,
        history: Mapping[str, Sequence[tuple[int, float]]] | None = None,
    ) -> ModelRecord:
        """Log `model_dir` (a Hugging Face model folder) as an MLflow run and model and add it
        as a new version of the emotion's model; make it champion if `promote`. `promotion`
        records why it was (or was not) promoted; `parent_version`, the neutral base's version
        `parent` names (a child). `params` (default: the training settings in
        the folder's card) become the run's params, the numbers in `metrics` its metrics, and
        `history` (default: the folder's `training_history.json`) its loss curves.

        Idempotent: a folder already registered returns its existing version untouched, so a
        retried or cached run never adds a duplicate (nor takes the alias back after a
        rollback)."""
        import mlflow.transformers  # noqa: F401  (seconds to import: not while holding the lock)
        from mlflow.exceptions import MlflowException

        from models.folders.model_folder import ADAPTER_CONFIG, recorded_digests, weight_digests
        from models.generation.generate import check_safetensors_only
        from models.registry.mlflow_log import card_params, log_model_folder, saved_history

        name = model_name(check_model_key(emotion))
        folder = Path(model_dir).resolve()
        relative = self._relative(folder)
        weights = json.dumps(recorded_digests(folder) or weight_digests(folder))
        check_safetensors_only(folder)  # what would not be served is not registered either
        if not any((folder / f).is_file() for f in ("config.json", ADAPTER_CONFIG)):
            raise EmoverseError(
                f"{folder} is not a model folder (no config.json or {ADAPTER_CONFIG}) to register"
            )
        with self._write_lock():
            if existing := self._version_with_source(name, str(folder), relative):
                mv = self._client.get_model_version(name, str(existing))
                if (mv.tags or {}).get(WEIGHTS_TAG) != weights:  # trained again after damage
                    self._relink_weights(mv, folder)
                    self._client.set_model_version_tag(name, str(existing), WEIGHTS_TAG, weights)
                return self.get(emotion, version=existing)
            try:
                self._client.create_registered_model(name, tags={"emotion": emotion})
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            lineage = {"emotion": emotion, "parent": parent, "data_fingerprint": data_fingerprint}
            logged = log_model_folder(
                self._client,
                self._experiment(),
                name,
                folder,
                metrics=metrics,
                params=card_params(folder) if params is None else params,
                history=saved_history(folder) if history is None else history,
                tags={**lineage, **({RELATIVE_TAG: relative} if relative else {})},
            )
            version = self._client.create_model_version(
                name,
                # The model's own location rather than `models:/<model_id>`: MLflow's sqlite
                # store resolves the latter through the process-wide tracking URI.
                source=logged.artifact_location,
                run_id=logged.run_id,
                model_id=logged.model_id,
                tags={
                    **lineage,
                    "metrics": json.dumps(metrics),
                    PROMOTION_TAG: promotion,
                    WEIGHTS_TAG: weights,
                    **({PARENT_VERSION_TAG: str(parent_version)} if parent_version else {}),
                    FOLDER_TAG: str(folder),
                    MODEL_ID_TAG: logged.model_id,
                    **({RELATIVE_TAG: relative} if relative else {}),
                },
            )
            if promote:
                self._set_champion(name, int(version.version))
        return self.get(emotion, version=int(version.version))

    def _relink_weights(self, mv: Any, folder: Path) -> None:
        """A folder trained again (its weights were damaged) under the same name: the logged
        model's weights follow it, where they are local links or copies."""
        from models.registry.mlflow_log import is_local, link_weights, local_path

        if (mv.tags or {}).get(MODEL_ID_TAG) and is_local(mv.source):
            model_dir = local_path(mv.source) / "model"
            if model_dir.is_dir():
                link_weights(folder, model_dir)

    def _version_with_source(self, name: str, source: str, relative: str | None) -> int | None:
        for mv in self._client.search_model_versions(f"name = '{name}'"):
            tags = mv.tags or {}
            if relative and tags.get(RELATIVE_TAG) == relative:
                return int(mv.version)
            if self._folder(mv) == source:
                return int(mv.version)
        return None

    def record_human_accuracy(self, emotion: str, version: int, share: Share) -> None:
        """Keep the readers' accuracy on a version (a metric that grows with every answer)."""
        with self._write_lock():
            name = model_name(check_label(emotion))
            self._client.set_model_version_tag(
                name, str(version), HUMAN_TAG, json.dumps(share.to_dict())
            )

    def champion_version(self, emotion: str) -> int | None:
        try:
            return self.get(emotion).version
        except NoModelError:
            return None

    def promote(self, emotion: str, version: int) -> ModelRecord:
        """Make `version` the emotion's champion; a no-op (no step added to the rollback
        history) when it already is."""
        self.get(emotion, version=version)  # a clear error for a version that does not exist
        with self._write_lock():
            if self.champion_version(emotion) != version:
                self._set_champion(model_name(emotion), version)
        return self.get(emotion)

    def rollback(self, emotion: str) -> ModelRecord:
        """Give the champion alias back to the version that held it before."""
        name = model_name(check_label(emotion))
        if not self.list(emotion):
            raise NoModelError(f"{emotion} has no model versions; nothing to roll back")
        with self._write_lock():
            history = self._champion_history(name)
            if len(history) < 2:
                raise NoModelError(f"{emotion} has no earlier champion to roll back to")
            history.pop()
            self._client.set_registered_model_alias(name, CHAMPION, str(history[-1]))
            self._client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        return self.get(emotion)

    def set_preferred(self, emotion: str, preference: dict[str, Any]) -> None:
        """Record which model writes `emotion` best (`{"model": "family" | "conditional",
        "version", "reason", ...}`) as a tag on the emotion's registered model (created if the
        emotion has no child yet)."""
        from mlflow.exceptions import MlflowException

        name = model_name(check_label(emotion))
        with self._write_lock():
            try:
                self._client.create_registered_model(name, tags={"emotion": emotion})
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            self._client.set_registered_model_tag(name, PREFERRED_TAG, json.dumps(preference))

    def preferred(self, emotion: str) -> dict[str, Any] | None:
        """The record `set_preferred` left for `emotion`, or None."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self._client.get_registered_model(model_name(check_label(emotion))).tags
        except MlflowException:
            return None
        found = (tags or {}).get(PREFERRED_TAG)
        return json.loads(found) if found else None

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
        if not self.uri.startswith("sqlite:///") or self.read_only:
            return nullcontext()
        return FileLock(self.uri.removeprefix("sqlite:///") + ".lock", timeout=300)

    def get(self, emotion: str, alias: str = CHAMPION, version: int | None = None) -> ModelRecord:
        """The version under `alias` (or the exact `version`) of the emotion's model."""
        from mlflow.exceptions import MlflowException

        name = model_name(check_model_key(emotion))
        try:
            if version is not None:
                mv = self._client.get_model_version(name, str(version))
            else:
                mv = self._client.get_model_version_by_alias(name, alias)
        except MlflowException:
            wanted = f"version {version}" if version is not None else f"alias {alias!r}"
            raise NoModelError(
                f"no {emotion} model with {wanted} in the registry; "
                "run `emoverse run` (or `emoverse train`) first"
            ) from None
        return self._record(mv)

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
        why = gate_reasons(newest.promotion)
        reason = f" ({why})" if why else ""
        return newest, (
            f"{model_name(emotion)} has no champion; using its newest version "
            f"v{newest.version}, which was not promoted{reason}"
        )

    def list(self, emotion: str | None = None) -> list[ModelRecord]:
        """Every version, by emotion then version."""
        emotions = [check_model_key(emotion)] if emotion else [*LABELS, CONDITIONAL]
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
                    (self._record(mv, aliases.get(int(mv.version), [])) for mv in found),
                    key=lambda r: r.version,
                )
            )
        return records

    def _folder(self, mv: Any) -> str:
        """The Hugging Face folder a version was registered from (older versions: their
        source), read under the current data dir."""
        tags = mv.tags or {}
        return self._resolve(tags.get(FOLDER_TAG) or mv.source, tags.get(RELATIVE_TAG))

    def _record(self, mv: Any, aliases: "list[str] | None" = None) -> ModelRecord:
        return _record(mv, aliases, self._folder(mv))


for _name in (
    *("register", "record_human_accuracy", "promote", "rollback", "get", "current", "list"),
    *("set_preferred", "preferred"),
):
    setattr(ModelRegistry, _name, _guarded(getattr(ModelRegistry, _name)))


def _record(mv: Any, aliases: list[str] | None, path: str) -> ModelRecord:
    tags = mv.tags or {}
    return ModelRecord(
        emotion=mv.name.removeprefix(MODEL_PREFIX),
        version=int(mv.version),
        path=path,
        aliases=sorted(aliases if aliases is not None else mv.aliases or []),
        metrics=json.loads(tags.get("metrics", "{}")),
        parent=tags.get("parent", ""),
        data_fingerprint=tags.get("data_fingerprint", ""),
        created_ms=int(mv.creation_timestamp or 0),
        promotion=tags.get(PROMOTION_TAG, ""),
        human_accuracy=json.loads(tags[HUMAN_TAG]) if HUMAN_TAG in tags else None,
        weights=json.loads(tags[WEIGHTS_TAG]) if tags.get(WEIGHTS_TAG) else None,
        run_id=mv.run_id or "",
        model_id=tags.get(MODEL_ID_TAG, ""),
        parent_version=_parent_version(tags),
    )


def _parent_version(tags: Mapping[str, str]) -> int | None:
    """The recorded neutral base version; for versions registered before it was recorded, the
    one their `parent` names."""
    if recorded := tags.get(PARENT_VERSION_TAG):
        return int(recorded)
    lineage = lineage_version(tags.get("parent", ""))
    return lineage[1] if lineage and lineage[0] == model_name(NEUTRAL) else None
