"""Train and register: the scratch init, the neutral base, one child per emotion."""

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from emoverse.settings import RunPaths
from models.card import LOSS_PLOT_FILE
from models.config import TrainConfig
from models.registry import ModelRegistry
from models.stages import SkippedModel, prepare_init, train_emotion_model
from models.train import StepCallback
from tasks.progress import StageProgress, publish_image


@task(name="prepare-foundation")
def prepare_init_task(base_model: str, data_dir: str, config: dict[str, Any]) -> str:
    """The folder or hub id the base stage starts from (a trained foundation for scratch
    presets, cached per corpus and settings)."""
    paths = RunPaths(Path(data_dir))
    with StageProgress("training foundation", unit="step") as progress:
        return prepare_init(
            base_model,
            paths.partitions,
            paths.models,
            TrainConfig(**config),
            cache_dir=paths.hf_cache,
            on_step=_step_reporter(progress),
        )


def _step_reporter(progress: StageProgress) -> StepCallback:
    def on_step(step: int, total: int, loss: float) -> None:
        progress.set_total(total)
        progress.update(1, loss=f"{loss:.3f}")

    return on_step


@task(name="train-model", task_run_name="train-{emotion}")
def train_model_task(
    emotion: str,
    init: str,
    data_dir: str,
    config: dict[str, Any],
    parent: str,
    min_poems: int = 1,
) -> dict[str, Any]:
    """Fine-tune one emotion's model. Returns the trained model's record, or, for a partition
    too small to train, `{"emotion": ..., "reason": ...}`."""
    paths = RunPaths(Path(data_dir))
    train_config = TrainConfig(**config)
    with StageProgress(f"training {emotion}", unit="step") as progress:
        result = train_emotion_model(
            emotion,
            init,
            partitions_dir=paths.partitions,
            models_dir=paths.models,
            config=train_config,
            parent=parent,
            min_poems=min_poems,
            cache_dir=paths.hf_cache,
            on_step=_step_reporter(progress),
        )
    if isinstance(result, SkippedModel):
        return result.to_dict()
    metrics = result.metrics
    publish_image(
        Path(result.path) / LOSS_PLOT_FILE,
        key=f"loss-curve-{emotion}",
        title=f"{emotion}: training and validation loss",
        extra_markdown=(
            f"validation loss **{metrics['val_loss']}**, {metrics['steps']} steps, "
            f"{metrics['train_poems']} poems, {metrics['seconds']} s on {metrics['device']}"
        ),
    )
    return result.to_dict()


@task(name="register-model", task_run_name="register-{trained[emotion]}")
def register_model_task(trained: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """Register a trained model as its emotion's new champion; returns the registry record."""
    registry = ModelRegistry.for_data_dir(Path(data_dir))
    record = registry.register(
        trained["emotion"],
        Path(trained["path"]),
        metrics=trained["metrics"],
        parent=trained["parent"],
        data_fingerprint=trained["data_fingerprint"],
    )
    return record.to_dict()


@task(name="publish-registry-summary")
def publish_summary_task(registered: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> None:
    rows = [
        {
            "emotion": r["emotion"],
            "version": r["version"],
            "aliases": ",".join(r["aliases"]),
            "val_loss": r["metrics"].get("val_loss"),
            "train_poems": r["metrics"].get("train_poems"),
            "path": r["path"],
        }
        for r in registered
    ] + [
        {
            "emotion": s["emotion"],
            "version": None,
            "aliases": "",
            "val_loss": None,
            "train_poems": None,
            "path": f"skipped: {s['reason']}",
        }
        for s in skipped
    ]
    create_table_artifact(rows, key="registry-versions", description="Models this run registered")
