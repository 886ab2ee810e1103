"""The model family: foundation -> neutral base -> eight emotion children -> registry; and
beside it the conditional model (`train-conditional`): one model for every emotion.

`train-emotion` trains, evaluates and registers one child. `train` trains the base, then fans
the eight children out (flows/fanout.py): on the `gpu` work pool where the `train-emotion`
deployment exists, else in this process.
"""

from typing import Any

from prefect import flow, get_run_logger

from emoverse.emotions import CONDITIONAL, EMOTIONS, NEUTRAL, Emotion, model_name
from emoverse.errors import EmoverseError, NoModelError, SettingError
from emoverse.paths import RunPaths
from flows.fanout import fan_out
from models.config import TRAIN_MODES, TrainingSettings, TrainMode
from models.evaluation.promotion import child_promotion_decision
from models.records import EvalConfig, FailedModel, SkippedModel
from models.registry.model_registry import CHAMPION, ModelRecord, ModelRegistry
from tasks.train import (
    evaluate_conditional_task,
    evaluate_model_task,
    gate_base_task,
    prepare_foundation_task,
    publish_family_task,
    register_conditional_task,
    register_model_task,
    train_conditional_task,
    train_model_task,
)


@flow(name="train-emotion", flow_run_name="train-{emotion}", persist_result=True)
def train_emotion(
    emotion: Emotion,
    data_dir: str | None = None,
    base_version: int | None = None,
    settings: TrainingSettings = TrainingSettings(),
) -> ModelRecord | SkippedModel:
    """Fine-tune one emotion's child from the neutral base, evaluate it against that base, and
    register it: as champion only if it passes the promotion gate and its base is the
    neutral champion (a family is one base and its children).

    Args:
        emotion: The emotion to train.
        data_dir: The run's data folder (its partitions and models; its registry unless
            `MLFLOW_TRACKING_URI` is set); default `$EMOVERSE_DATA_DIR`, else data/run.
        base_version: The neutral base's registry version; default its champion.
        settings: Training and evaluation settings.
    """
    emotion = Emotion(emotion).value
    data_dir = str(RunPaths.at(data_dir).data_dir)
    base = ModelRegistry.for_data_dir(data_dir).get(NEUTRAL, version=base_version)
    base_eval = base.evaluation
    if base_eval is None:
        raise EmoverseError(
            f"{model_name(NEUTRAL)} v{base.version} has no evaluation to compare children "
            "with; train the family with the `train` flow"
        )
    _, _, child_config = settings.stage_configs()
    parent = f"{model_name(NEUTRAL)} v{base.version}"
    trained = train_model_task(
        emotion,
        base.path,
        data_dir,
        child_config,
        parent,
        min_poems=settings.min_poems,
        parent_version=base.version,
    )
    if isinstance(trained, SkippedModel):
        return trained
    evaluation = evaluate_model_task(
        trained,
        data_dir,
        EvalConfig(samples=settings.eval_samples),
        base=base_eval,
        base_dir=base.path,
    )
    decision = child_promotion_decision(
        evaluation, base_eval, base_name=parent, base_is_champion=CHAMPION in base.aliases
    )
    get_run_logger().info("%s: %s", emotion, decision.text)
    return register_model_task(trained, data_dir, evaluation, decision)


@flow(name="train", flow_run_name="train-base")  # the children are runs of their own
def train(
    data_dir: str | None = None,
    settings: TrainingSettings = TrainingSettings(),
) -> dict[str, Any]:
    """Pretrain a foundation (scratch presets only), fine-tune and evaluate the neutral base,
    then train the eight children from it. Every stage reuses an identical earlier run, so a
    rerun with nothing changed trains nothing, and a retry trains only the children that
    failed. One child failing does not stop the others; the run then fails naming them.

    Args:
        data_dir: The run's data folder; default `$EMOVERSE_DATA_DIR`, else data/run.
        settings: Training and evaluation settings.
    """
    data_dir = str(RunPaths.at(data_dir).data_dir)
    foundation_config, base_config, _ = settings.stage_configs()
    foundation = prepare_foundation_task(settings.base_model, data_dir, foundation_config)
    base = train_model_task(
        NEUTRAL, foundation, data_dir, base_config, settings.base_model, settings.min_poems
    )
    if isinstance(base, SkippedModel):
        raise SettingError(
            "min_poems", f"is {settings.min_poems}: no neutral base to train ({base.reason})"
        )
    eval_config = EvalConfig(samples=settings.eval_samples)
    base_eval = evaluate_model_task(base, data_dir, eval_config)
    decision = gate_base_task(base, base_eval, data_dir, eval_config)
    get_run_logger().info("%s: %s", NEUTRAL, decision.text)
    base_record = register_model_task(base, data_dir, base_eval, decision)

    children = fan_out(
        train_emotion,
        EMOTIONS,
        data_dir=data_dir,
        base_version=base_record.version,
        settings=settings.model_dump(),
    )
    registered = [base_record, *(c for c in children.values() if isinstance(c, ModelRecord))]
    skipped = [c for c in children.values() if isinstance(c, SkippedModel)]
    failed = [c for c in children.values() if isinstance(c, FailedModel)]
    publish_family_task(registered, skipped, failed, data_dir)
    if failed:
        details = "; ".join(f"{f.emotion}: {f.reason}" for f in failed)
        names = ", ".join(f.emotion for f in failed)
        raise RuntimeError(f"training failed for: {names} ({details})")
    return {
        "registered": {r.emotion: r.version for r in registered},
        "champions": [r.emotion for r in registered if "champion" in r.aliases],
        "promotion": {r.emotion: r.promotion for r in registered},
        "skipped": {s.emotion: s.reason for s in skipped},
    }


@flow(name="train-conditional", flow_run_name="train-conditional", persist_result=True)
def train_conditional(
    data_dir: str | None = None,
    base_version: int | None = None,
    settings: TrainingSettings = TrainingSettings(),
) -> dict[str, Any]:
    """Train the conditional model (one model for every label, told which by a control token
    before the poem) from the neutral base's start, evaluate it as each emotion's model
    against the neutral base, register it as `emoverse-conditional`, and record per emotion
    whether it or the emotion's child writes that emotion better. An identical earlier run
    is reused, so a rerun with nothing changed trains nothing.

    Args:
        data_dir: The run's data folder; default `$EMOVERSE_DATA_DIR`, else data/run.
        base_version: The neutral base to compare with; default its current version (none:
            no lift and no fluency under the base).
        settings: Training and evaluation settings (`conditional_*` for this model).
    """
    data_dir = str(RunPaths.at(data_dir).data_dir)
    foundation_config, _, _ = settings.stage_configs()
    start = prepare_foundation_task(settings.base_model, data_dir, foundation_config)
    trained = train_conditional_task(
        start,
        data_dir,
        settings.conditional_config(),
        settings.base_model,
        settings.conditional_balance,
    )
    if isinstance(trained, SkippedModel):
        raise EmoverseError(f"cannot train the conditional model: {trained.reason}")
    registry = ModelRegistry.for_data_dir(data_dir)
    try:
        if base_version is not None:
            base: ModelRecord | None = registry.get(NEUTRAL, version=base_version)
        else:
            base, _ = registry.current(NEUTRAL)
    except NoModelError:
        base = None
    if base is not None and base.evaluation is None:
        base = None
    evaluations = evaluate_conditional_task(
        trained,
        data_dir,
        EvalConfig(samples=settings.eval_samples),
        base=base.evaluation if base else None,
        base_dir=base.path if base else None,
    )
    record = register_conditional_task(trained, data_dir, evaluations, base)
    get_run_logger().info("conditional: %s", record.promotion)
    return {
        "registered": {CONDITIONAL: record.version},
        "champions": [CONDITIONAL] if CHAMPION in record.aliases else [],
        "promotion": {CONDITIONAL: record.promotion},
        "skipped": {},
        "cached": trained.cached,
        "preferred": {e: (registry.preferred(e) or {}).get("model") for e in evaluations},
    }


def train_by_mode(
    data_dir: str, settings: TrainingSettings, mode: TrainMode = "family"
) -> dict[str, Any]:
    """`train` (the family), `train_conditional`, or both in that order (the conditional
    model is then compared with the new children), their results in one summary."""
    if mode not in TRAIN_MODES:
        raise EmoverseError(f"unknown mode {mode!r}; valid: {', '.join(TRAIN_MODES)}")
    summary: dict[str, Any] = {"registered": {}, "champions": [], "promotion": {}, "skipped": {}}
    runs = (
        [train]
        if mode == "family"
        else [train_conditional]
        if mode == "conditional"
        else [
            train,
            train_conditional,
        ]
    )
    for run in runs:
        result = run(data_dir=data_dir, settings=settings)
        for key, value in result.items():
            if isinstance(summary.get(key), dict):
                summary[key].update(value)
            elif isinstance(summary.get(key), list):
                summary[key] += value
            else:
                summary[key] = value
    return summary
