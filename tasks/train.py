"""Train, evaluate, register: the foundation, the neutral base, one child per emotion.

Torch loads inside the tasks that train or evaluate, not on import: a flow that only passes
these records on (or `prefect deploy`) does not pay for it."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from emoverse.emotions import LABELS, model_name
from emoverse.paths import RunPaths
from emoverse.report import plot_confusion_matrix
from models.card import LOSS_PLOT_FILE, add_evaluation_to_card
from models.config import TrainConfig
from models.records import (
    EvalConfig,
    Evaluation,
    FailedModel,
    SkippedModel,
    TrainedModel,
    confusion_matrix,
)
from models.registry import ModelRecord, ModelRegistry
from tasks.progress import StageProgress, publish_image

# The global concurrency limit every training and evaluation holds a slot of, wherever it runs
# (in-process or on a `gpu` worker): create it with as many slots as there are GPUs,
# `prefect gcl create gpu --limit <GPUs>`. Without it, work is not gated (strict=False).
GPU_LIMIT = "gpu"

if TYPE_CHECKING:
    from models.train import StepCallback


@contextmanager
def gpu_slot() -> Iterator[None]:
    """Hold a slot of the `gpu` limit for the block, where the limit exists."""
    if not _gpu_limit_exists():
        yield
        return
    # Training outlives the 5-minute lease; a missed renewal must not kill a day of training.
    with concurrency(GPU_LIMIT, occupy=1, raise_on_lease_renewal_failure=False):
        yield


@cache
def _gpu_limit_exists() -> bool:
    """Asked once per process: asking for a slot of a limit that does not exist costs about
    2 s on 2 cores each time, which would dominate a rerun where every stage is reused."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            get_run_logger().info(
                "no global concurrency limit %r: training is not gated "
                "(`prefect gcl create %s --limit <GPUs>` gates it)",
                GPU_LIMIT,
                GPU_LIMIT,
            )
            return False
    return True


@task(name="prepare-foundation")
def prepare_foundation_task(base_model: str, data_dir: str, config: TrainConfig) -> str:
    """The folder or hub id the neutral base starts from (a trained foundation for scratch
    presets, cached per corpus and settings)."""
    from models.stages import prepare_foundation

    paths = RunPaths.at(data_dir)
    with gpu_slot(), StageProgress("training foundation", unit="step") as progress:
        return prepare_foundation(
            base_model,
            paths.poems_file,
            paths.models,
            config,
            cache_dir=paths.hf_cache,
            on_step=_step_reporter(progress),
        )


def _step_reporter(progress: StageProgress) -> "StepCallback":
    def on_step(step: int, total: int, loss: float) -> None:
        progress.set_total(total)
        progress.update(1, loss=f"{loss:.3f}")

    return on_step


@task(name="train-model", task_run_name="train-{emotion}")
def train_model_task(
    emotion: str,
    start: str,
    data_dir: str,
    config: TrainConfig,
    parent: str,
    min_poems: int = 1,
) -> TrainedModel | SkippedModel:
    """Fine-tune one emotion's model from `start` (or reuse the folder of an identical earlier
    run); a partition too small to train is skipped, with the reason."""
    from models.stages import train_emotion_model

    paths = RunPaths.at(data_dir)
    with gpu_slot(), StageProgress(f"training {emotion}", unit="step") as progress:
        result = train_emotion_model(
            emotion,
            start,
            partitions_dir=paths.partitions,
            models_dir=paths.models,
            config=config,
            parent=parent,
            min_poems=min_poems,
            cache_dir=paths.hf_cache,
            on_step=_step_reporter(progress),
        )
    if isinstance(result, SkippedModel):
        get_run_logger().warning("skipped %s: %s", emotion, result.reason)
        return result
    if result.cached:
        get_run_logger().info("%s: an identical run is already trained: %s", emotion, result.path)
    metrics = result.metrics
    publish_image(
        Path(result.path) / LOSS_PLOT_FILE,
        key=f"loss-curve-{emotion}",
        title=f"{emotion}: training and validation loss",
        extra_markdown=(
            f"validation loss **{metrics['val_loss']}**, {metrics['steps']} steps, "
            f"{metrics['train_poems']} poems, {metrics['seconds']} s on {metrics['device']}"
            + (" (reused: nothing changed since)" if result.cached else "")
        ),
    )
    return result


@task(name="evaluate-model", task_run_name="evaluate-{trained.emotion}")
def evaluate_model_task(
    trained: TrainedModel,
    data_dir: str,
    config: EvalConfig,
    base: Evaluation | None = None,
) -> Evaluation:
    """Perplexity, emotion fidelity (and lift over `base`, the neutral base's evaluation) and
    diversity of a trained model; cached in its folder. Publishes its sample poems."""
    from models.evaluate import evaluate_model

    paths = RunPaths.at(data_dir)
    emotion = trained.emotion
    with gpu_slot():
        evaluation = evaluate_model(
            trained.path,
            emotion,
            paths.partitions,
            base=base,
            config=config,
            cache_dir=paths.hf_cache,
        )
    poems = "\n\n---\n\n".join(
        "\n".join(f"> {line}" if line else ">" for line in poem.splitlines())
        for poem in evaluation.samples
    )
    create_markdown_artifact(
        f"## {model_name(emotion)}: sample poems\n\n"
        f"fidelity **{evaluation.fidelity:.0%}** of {config.samples} poems tagged {emotion}"
        + (f" (lift {evaluation.lift:+.0%} over the base)" if evaluation.lift is not None else "")
        + f"; distinct-1 {evaluation.distinct_1:.2f}, distinct-2 {evaluation.distinct_2:.2f}\n\n"
        + poems,
        key=f"samples-{emotion}",
        description=f"Poems written by the {emotion} model",
    )
    return evaluation


@task(name="register-model", task_run_name="register-{trained.emotion}")
def register_model_task(
    trained: TrainedModel,
    data_dir: str,
    evaluation: Evaluation,
    promote: bool = True,
    promotion: str = "",
) -> ModelRecord:
    """Register a trained model with its evaluation, as champion if `promote`; writes the
    evaluation into its card and announces the version with an `emoverse.model.registered`
    event."""
    add_evaluation_to_card(Path(trained.path), evaluation.to_dict(), promotion, promoted=promote)
    registry = ModelRegistry.for_data_dir(Path(data_dir))
    record = registry.register(
        trained.emotion,
        Path(trained.path),
        metrics={**trained.metrics, "evaluation": _headline(evaluation)},
        parent=trained.parent,
        data_fingerprint=trained.data_fingerprint,
        promote=promote,
        promotion=promotion,
    )
    emit_event(
        event="emoverse.model.registered",
        resource={
            "prefect.resource.id": f"emoverse.model.{record.emotion}",
            "prefect.resource.name": model_name(record.emotion),
            "emoverse.emotion": record.emotion,
        },
        payload={
            "version": record.version,
            "aliases": record.aliases,
            "promotion": record.promotion,
            "path": record.path,
            "registry": registry.uri,
        },
    )
    return record


def _headline(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation without its sample poems: what the registry keeps."""
    return {k: v for k, v in evaluation.to_dict().items() if k != "samples"}


@task(name="publish-family-report")
def publish_family_task(
    registered: list[ModelRecord],
    skipped: list[SkippedModel],
    failed: list[FailedModel],
) -> None:
    """The run's registry versions, the family's evaluation table, and its 9x9 confusion
    matrix (model x label of the poems it wrote) as Prefect artifacts."""
    rows = [
        {
            "emotion": r.emotion,
            "version": r.version,
            "aliases": ",".join(r.aliases),
            "promotion": r.promotion,
            "val_loss": r.metrics.get("val_loss"),
            "train_poems": r.metrics.get("train_poems"),
            "path": r.path,
        }
        for r in registered
    ]
    rows += [
        {"emotion": s.emotion, "version": None, "promotion": f"skipped: {s.reason}"}
        for s in skipped
    ]
    rows += [{"emotion": f.emotion, "version": None, "promotion": "failed"} for f in failed]
    create_table_artifact(rows, key="registry-versions", description="Models this run registered")

    evaluations = {
        r.emotion: r.metrics["evaluation"] for r in registered if "evaluation" in r.metrics
    }
    if not evaluations:
        return
    create_table_artifact(
        [
            {
                "emotion": emotion,
                "fidelity": e["fidelity"],
                "lift": e["lift"],
                "perplexity (own)": e["perplexity"].get(emotion),
                "perplexity (neutral)": e["perplexity"].get("neutral"),
                "distinct-1": e["distinct_1"],
                "distinct-2": e["distinct_2"],
            }
            for emotion, e in evaluations.items()
        ],
        key="family-evaluation",
        description="Perplexity, emotion fidelity and diversity per model",
    )
    model_rows, matrix = confusion_matrix(
        {k: Evaluation.from_dict(v) for k, v in evaluations.items()}
    )
    with tempfile.TemporaryDirectory() as tmp:
        shares = [[cell.share for cell in row] for row in matrix]
        chart = plot_confusion_matrix(shares, model_rows, list(LABELS), Path(tmp) / "cm.png")
        publish_image(
            chart,
            key="family-confusion-matrix",
            title="Which labels each model's poems get (rows: models, columns: labels)",
        )
