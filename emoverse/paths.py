"""Every path under a run's data dir, in one place."""

from dataclasses import dataclass
from pathlib import Path

from emoverse import settings

# File names inside the poems folder (what `emoverse ingest` writes).
POEMS_FILE = "poems.parquet"
REJECTS_FILE = "rejects.parquet"
INGEST_RECORD = "_ingest.json"


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes under one data dir:

        <data_dir>/raw/                    downloaded books and their checksums (ingest)
        <data_dir>/poems/                  poems.parquet, rejects.parquet, _ingest.json
        <data_dir>/partitions/             README.md, _manifest.json, data/emotion=<label>/ (tag)
        <data_dir>/models/<emotion>/       run-<key>/ model folders (train)
        <data_dir>/models/foundation/      pretrained foundations of scratch presets
        <data_dir>/models/blends/          merged dialled and blended models (a cache)
        <data_dir>/registry/mlflow.db      the model registry (unless MLFLOW_TRACKING_URI)
        <data_dir>/judgements/judgements.db  readers' blind guesses (emoverse serve's /judge)
        <data_dir>/report/                 report.md and its figures (emoverse report)
        <data_dir>/cache/datasets/         the `datasets` cache
    """

    data_dir: Path

    @classmethod
    def at(cls, data_dir: str | Path | None = None) -> "RunPaths":
        """The paths under `data_dir`, default `$EMOVERSE_DATA_DIR` (else data/run), read
        now: the CLI and every flow resolve it the same way, when they run."""
        return cls(Path(data_dir) if data_dir else settings.data_dir())

    @property
    def raw(self) -> Path:
        return self.data_dir / "raw"

    @property
    def poems(self) -> Path:
        return self.data_dir / "poems"

    @property
    def poems_file(self) -> Path:
        return self.poems / POEMS_FILE

    @property
    def rejects_file(self) -> Path:
        return self.poems / REJECTS_FILE

    @property
    def partitions(self) -> Path:
        return self.data_dir / "partitions"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    @property
    def blends(self) -> Path:
        return self.data_dir / "models" / "blends"

    @property
    def registry_db(self) -> Path:
        return self.data_dir.resolve() / "registry" / "mlflow.db"

    @property
    def judgements_db(self) -> Path:
        return self.data_dir / "judgements" / "judgements.db"

    @property
    def report(self) -> Path:
        return self.data_dir / "report"

    @property
    def hf_cache(self) -> Path:
        return self.data_dir / "cache" / "datasets"
