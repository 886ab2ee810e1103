"""Train, evaluate, register: the foundation, the neutral base, one child per emotion.

Torch loads inside the tasks that train or evaluate, not on import: a flow that only passes
these records on (or `prefect deploy`) does not pay for it."""

import math
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

from emoverse.emotions import CONDITIONAL, EMOTIONS, LABELS, NEUTRAL, model_name
from emoverse.errors import NoModelError
from emoverse.judgements import JudgementStore
from emoverse.paths import RunPaths
from emoverse.report import plot_confusion_matrix
from models.config import TrainConfig
from models.evaluation.promotion import (
    Decision,
    base_promotion_decision,
    base_retrained_unchanged,
    champion_folder_gone,
    conditional_promotion_decision,
    gate_reasons,
)
from models.folders.card import LOSS_PLOT_FILE, add_evaluation_to_card
from models.generation.choice import record_preferences
from models.records import (
    EvalConfig,
    Evaluation,
    FailedModel,
    SkippedModel,
    TrainedModel,
    confusion_matrix,
)
from models.registry.model_registry import CHAMPION, ModelRecord, ModelRegistry
from models.reports.family import write_family_report
from tasks.progress import StageProgress, publish_image, publish_markdown, show_on_parent_run

# The global concurrency limit every training and evaluation holds a slot of, wherever it runs
# (in-process or on a `gpu` worker): create it with as many slots as there are GPUs,
# `prefect gcl create gpu --limit <GPUs>`. Without it, work is not gated (strict=False).
GPU_LIMIT = "gpu"

if TYPE_CHECKING:
    from models.training.loop import StepCallback


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
    from models.training.stages import prepare_foundation

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
    parent_version: int | None = None,
) -> TrainedModel | SkippedModel:
    """Fine-tune one emotion's model from `start` (or reuse the folder of an identical earlier
    run); a partition too small to train is skipped, with the reason. `parent_version`: the
    registry version `parent` names (a child's neutral base)."""
    from models.training.stages import train_emotion_model

    paths = RunPaths.at(data_dir)
    with gpu_slot(), StageProgress(f"training {emotion}", unit="step") as progress:
        result = train_emotion_model(
            emotion,
            start,
            partitions_dir=paths.partitions,
            models_dir=paths.models,
            config=config,
            parent=parent,
            parent_version=parent_version,
            min_poems=min_poems,
            cache_dir=paths.hf_cache,
            on_step=_step_reporter(progress),
        )
    if isinstance(result, SkippedModel):
        get_run_logger().warning("skipped %s: %s", emotion, result.reason)
        return result
    if result.cached:
        get_run_logger().info("%s: an identical run is already trained: %s", emotion, result.path)
    _publish_loss_curve(result)
    return result


def _publish_loss_curve(result: TrainedModel) -> None:
    metrics = result.metrics
    poems = f"{metrics['train_poems']} poems" + (
        f" ({metrics['balance']} balance)" if "balance" in metrics else ""
    )
    publish_image(
        Path(result.path) / LOSS_PLOT_FILE,
        key=f"loss-curve-{result.emotion}",
        title=f"{result.emotion}: training and validation loss",
        extra_markdown=(
            f"validation loss **{metrics['val_loss']}**, {metrics['steps']} steps, {poems}, "
            f"{metrics['seconds']} s on {metrics['device']}"
            + (" (reused: nothing changed since)" if result.cached else "")
        ),
    )


@task(name="evaluate-model", task_run_name="evaluate-{trained.emotion}")
def evaluate_model_task(
    trained: TrainedModel,
    data_dir: str,
    config: EvalConfig,
    base: Evaluation | None = None,
    base_dir: str | None = None,
) -> Evaluation:
    """Perplexity, emotion fidelity under both judges (and lift over `base`, the neutral base's
    evaluation), diversity, and the fluency of its poems under the base in `base_dir`;
    cached in its folder. Publishes its sample poems."""
    from models.evaluation.evaluate import evaluate_model

    paths = RunPaths.at(data_dir)
    emotion = trained.emotion
    with gpu_slot():
        evaluation = evaluate_model(
            trained.path,
            emotion,
            paths.partitions,
            base=base,
            base_dir=base_dir,
            config=config,
            cache_dir=paths.hf_cache,
        )
    poems = "\n\n---\n\n".join(
        "\n".join(f"> {line}" if line else ">" for line in poem.splitlines())
        for poem in evaluation.samples
    )
    judged = "; ".join(
        f"{judge}: {evaluation.fidelity_of(judge)}"
        + (f", p={entry['p_value']:.2g} against the base" if entry.get("p_value") else "")
        for judge, entry in evaluation.judges.items()
    )
    create_markdown_artifact(
        f"## {model_name(emotion)}: sample poems\n\n"
        f"Share of {evaluation.n_samples} sampled poems labelled **{emotion}** "
        f"[95% interval] by each judge: {judged}"
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
    decision: Decision,
) -> ModelRecord:
    """Register a trained model with its evaluation, as champion if the promotion `decision`
    says so; writes the evaluation into its card and announces the version with an
    `emoverse.model.registered` event."""
    promote, promotion = decision.promoted, decision.text
    add_evaluation_to_card(Path(trained.path), evaluation.to_dict(), promotion, promoted=promote)
    registry = ModelRegistry.for_data_dir(Path(data_dir))
    record = registry.register(
        trained.emotion,
        Path(trained.path),
        metrics={**trained.metrics, "evaluation": _headline(evaluation)},
        parent=trained.parent,
        parent_version=trained.parent_version,
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


@task(name="gate-base")
def gate_base_task(
    base: TrainedModel, evaluation: Evaluation, data_dir: str, config: EvalConfig
) -> Decision:
    """Whether a new neutral base may become champion: no worse than the current champion on
    the neutral test split, which is measured on the same poems (its evaluation is reused
    when nothing changed)."""
    from models.evaluation.evaluate import evaluate_model

    paths = RunPaths.at(data_dir)
    registry = ModelRegistry.for_data_dir(paths.data_dir)
    try:
        champion = registry.get(NEUTRAL)
    except NoModelError:
        return base_promotion_decision(evaluation, None)
    if Path(champion.path).resolve() == Path(base.path).resolve():
        return base_retrained_unchanged(champion.promotion)
    if not Path(champion.path).is_dir():
        return champion_folder_gone(champion.version)
    with gpu_slot():
        current = evaluate_model(
            champion.path, NEUTRAL, paths.partitions, config=config, cache_dir=paths.hf_cache
        )
    return base_promotion_decision(evaluation, current, champion_version=champion.version)


def _headline(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation without its sample poems: what the registry keeps."""
    return {k: v for k, v in evaluation.to_dict().items() if k != "samples"}


@task(name="publish-family-report")
def publish_family_task(
    registered: list[ModelRecord],
    skipped: list[SkippedModel],
    failed: list[FailedModel],
    data_dir: str,
) -> None:
    """The run's registry versions, the family's evaluation in two narrow tables (fidelity;
    fluency), its 9x9 confusion matrix (model x label of the poems it wrote) and the family
    report as Prefect artifacts; the versions and the report also on the run that started
    this one (the pipeline), whose page would otherwise show none of them."""
    rows = [
        {
            "emotion": r.emotion,
            "version": f"v{r.version}",
            "champion": "yes" if CHAMPION in r.aliases else "no",
            "val loss": _rounded(r.metrics.get("val_loss"), 2),
            "train poems": r.metrics.get("train_poems", BLANK),
            "why": gate_reasons(r.promotion) or BLANK,
        }
        for r in registered
    ]
    rows += [_unregistered_row(s.emotion, f"skipped: {s.reason}") for s in skipped]
    rows += [_unregistered_row(f.emotion, f"failed: {f.reason}") for f in failed]
    show_on_parent_run(
        create_table_artifact(
            rows,
            key="registry-versions",
            description="Models this run registered; champion: the version the emotion uses "
            f"now; why: the promotion gate's reasons. {BLANK}: not registered (skipped or "
            "failed). Model folders: `emoverse models`.",
        )
    )

    evaluations = {r.emotion: e for r in registered if (e := r.evaluation) is not None}
    if not evaluations:
        return
    create_table_artifact(
        [_fidelity_row(emotion, e) for emotion, e in evaluations.items()],
        key="family-evaluation",
        description="Per model, the share of its n sampled poems each judge labels with its "
        "emotion [95% interval], beside the share of the base's poems; p: Fisher's exact "
        f"one-sided test that the child's NRC share beats the base's. {BLANK}: nothing to "
        "compare (the base itself).",
    )
    create_table_artifact(
        [_fluency_row(emotion, e) for emotion, e in evaluations.items()],
        key="family-fluency",
        description="Per model: perplexity on its own emotion's test poems and of its sampled "
        "poems under the base (lower: more fluent), distinct-2 (share of distinct word pairs) "
        f"beside the base's. {BLANK}: nothing to measure (no test poems, or the base itself).",
    )
    model_rows, matrix = confusion_matrix(evaluations)
    with tempfile.TemporaryDirectory() as tmp:
        shares = [[cell.share for cell in row] for row in matrix]
        chart = plot_confusion_matrix(shares, model_rows, list(LABELS), Path(tmp) / "cm.png")
        publish_image(
            chart,
            key="family-confusion-matrix",
            title="Which labels each model's poems get (rows: models, columns: labels)",
        )
    _publish_report(data_dir)


BLANK = "—"  # a cell with nothing to show; each table's description says why


def _unregistered_row(emotion: str, why: str) -> dict[str, str]:
    blank = dict.fromkeys(("version", "champion", "val loss", "train poems"), BLANK)
    return {"emotion": emotion, **blank, "why": why}


def _rounded(value: float | None, digits: int = 1) -> str:
    """A number for people; nothing measured (None, or NaN: no validation poems) is BLANK."""
    return BLANK if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _share(e: Evaluation, judge: str, key: str) -> str:
    got = e.judges.get(judge, {}).get(key)
    return BLANK if not got else f"{got['share']:.0%} [{got['low']:.0%}–{got['high']:.0%}]"


def _fidelity_row(emotion: str, e: Evaluation) -> dict[str, str]:
    """One model's fidelity under both judges, rounded for people."""
    p = e.judges.get("nrc", {}).get("p_value")
    return {
        "emotion": emotion,
        "n": str(e.n_samples),
        "NRC": _share(e, "nrc", "fidelity"),
        "base (NRC)": _share(e, "nrc", "base"),
        "p": BLANK if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}"),
        "Empath": _share(e, "empath", "fidelity"),
        "base (Empath)": _share(e, "empath", "base"),
    }


def _fluency_row(emotion: str, e: Evaluation) -> dict[str, str]:
    """One model's perplexities and diversity, rounded for people."""
    return {
        "emotion": emotion,
        "perplexity": _rounded(e.perplexity.get(emotion)),
        "under base": _rounded(e.sample_perplexity),
        "distinct-2": f"{e.distinct_2:.2f}",
        "base's": _rounded(e.base_distinct_2, 2),
    }


def _publish_report(data_dir: str) -> Path:
    """`emoverse report` as a Prefect markdown artifact, its figures inlined."""
    paths = RunPaths.at(data_dir)
    report = write_family_report(
        ModelRegistry.for_data_dir(paths.data_dir),
        JudgementStore(paths.judgements_db),
        paths.partitions,
        paths.report,
    )
    show_on_parent_run(
        publish_markdown(
            report, key="family-report", description="Does each child carry its emotion?"
        )
    )
    return report


# --- the conditional model (models/training/conditional.py)
# -------------------------------------------


@task(name="train-conditional-model")
def train_conditional_task(
    start: str, data_dir: str, config: TrainConfig, parent: str, balance: str
) -> TrainedModel | SkippedModel:
    """Train the conditional model from `start` on every partition (or reuse the folder of an
    identical earlier run)."""
    from models.training.conditional import train_conditional_model

    paths = RunPaths.at(data_dir)
    with gpu_slot(), StageProgress("training conditional", unit="step") as progress:
        result = train_conditional_model(
            start,
            partitions_dir=paths.partitions,
            models_dir=paths.models,
            config=config,
            parent=parent,
            balance=balance,
            cache_dir=paths.hf_cache,
            on_step=_step_reporter(progress),
        )
    if isinstance(result, SkippedModel):
        return result
    if result.cached:
        get_run_logger().info("conditional: an identical run is already trained: %s", result.path)
    _publish_loss_curve(result)
    return result


@task(name="evaluate-conditional-model")
def evaluate_conditional_task(
    trained: TrainedModel,
    data_dir: str,
    config: EvalConfig,
    base: Evaluation | None = None,
    base_dir: str | None = None,
) -> dict[str, Evaluation]:
    """The conditional model evaluated as each emotion's model, exactly as a child is (both
    judges, lift over `base`, fluency under the base in `base_dir`), each evaluation cached
    in its folder. Publishes a sample poem per emotion."""
    from models.evaluation.evaluate import evaluate_model

    paths = RunPaths.at(data_dir)
    evaluations = {}
    with gpu_slot():
        for emotion in EMOTIONS:
            evaluations[emotion] = evaluate_model(
                trained.path,
                emotion,
                paths.partitions,
                base=base,
                base_dir=base_dir,
                config=config,
                cache_dir=paths.hf_cache,
                conditional=True,
            )
    create_markdown_artifact(
        "## emoverse-conditional: a sample poem per emotion\n\n"
        + "\n\n".join(
            f"### {emotion}: fidelity (NRC) {e.fidelity_of('nrc')}\n\n"
            + "\n".join(
                f"> {line}" if line else ">" for line in (e.samples or [""])[0].splitlines()
            )
            for emotion, e in evaluations.items()
        ),
        key="samples-conditional",
        description="Poems written by the conditional model, one per control token",
    )
    return evaluations


@task(name="register-conditional-model")
def register_conditional_task(
    trained: TrainedModel,
    data_dir: str,
    evaluations: dict[str, Evaluation],
    base: ModelRecord | None,
) -> ModelRecord:
    """Register the conditional model with its per-emotion evaluations (champion of
    `emoverse-conditional` if it passes the promotion gate against the base for at least one
    emotion), then record per emotion whether it or the child writes that emotion better
    (`ModelRegistry.set_preferred`, read by `--model best`)."""
    registry = ModelRegistry.for_data_dir(Path(data_dir))
    base_eval = base.evaluation if base else None
    decision = conditional_promotion_decision(
        evaluations, base_eval, base_name=f"{model_name(NEUTRAL)} v{base.version}" if base else ""
    )
    record = registry.register(
        CONDITIONAL,
        Path(trained.path),
        metrics={
            **trained.metrics,
            "evaluations": {e: _headline(ev) for e, ev in evaluations.items()},
        },
        parent=trained.parent,
        data_fingerprint=trained.data_fingerprint,
        promote=decision.promoted,
        promotion=decision.text,
    )
    logger = get_run_logger()
    for emotion, preference in record_preferences(registry, record, evaluations).items():
        logger.info("%s: preferred %s (%s)", emotion, preference["model"], preference["reason"])
    _publish_report(data_dir)  # the family report again, now with the conditional model in it
    return record
