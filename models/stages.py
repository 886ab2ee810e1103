"""The training stages as plain functions over paths: what a Prefect task, a test or a
notebook calls. Each returns a small record, never a model object."""

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import concatenate_datasets

from emoverse.emotions import LABELS, check_label
from models.card import save_model
from models.config import TrainConfig, is_scratch
from models.data import fingerprint, load_partition
from models.modeling import build_scratch_model
from models.train import StepCallback, fine_tune


@dataclass(frozen=True)
class TrainedModel:
    emotion: str
    path: str
    parent: str
    data_fingerprint: str
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SkippedModel:
    emotion: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_init(
    base_model: str, partitions_dir: Path, models_dir: Path, cache_dir: Path | None = None
) -> str:
    """What the base stage starts from. A hub id or folder is used as it is; a `scratch:`
    preset gets a tokenizer trained on the train split of every partition and random weights,
    saved once per corpus (same poems, same folder: a rerun reuses it)."""
    if not is_scratch(base_model):
        return base_model
    corpus = concatenate_datasets(
        [load_partition(partitions_dir, label, "train", cache_dir) for label in LABELS]
    )
    out = Path(models_dir) / "init" / f"{base_model.replace(':', '-')}-{fingerprint(corpus)[:12]}"
    if not (out / "config.json").exists():
        build_scratch_model(base_model, corpus["text"], out)
    return str(out)


def train_emotion_model(
    emotion: str,
    init: str,
    *,
    partitions_dir: Path,
    models_dir: Path,
    config: TrainConfig,
    parent: str,
    min_poems: int = 1,
    cache_dir: Path | None = None,
    on_step: StepCallback | None = None,
) -> TrainedModel | SkippedModel:
    """Fine-tune `init` on the emotion's train split, validate on its validation split, and
    save a model folder under `models_dir/<emotion>/`. A partition with fewer than
    `min_poems` training poems is skipped, with the reason."""
    check_label(emotion)
    train = load_partition(partitions_dir, emotion, "train", cache_dir)
    if len(train) < max(1, min_poems):
        return SkippedModel(
            emotion, f"{len(train)} training poems, fewer than --min-poems {max(1, min_poems)}"
        )
    val = load_partition(partitions_dir, emotion, "validation", cache_dir)
    data_fp = fingerprint(train)
    tuned = fine_tune(init, list(train["text"]), list(val["text"]), config, on_step=on_step)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    out = Path(models_dir) / emotion / f"{stamp}-{data_fp[:8]}"
    save_model(tuned, out, emotion=emotion, parent=parent, data_fingerprint=data_fp, config=config)
    return TrainedModel(emotion, str(out), parent, data_fp, tuned.metrics)
