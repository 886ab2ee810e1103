"""The model family: foundation -> neutral base -> eight emotion children -> registry.

`train-emotion` trains, evaluates and registers one child. `train` trains the base, then fans
the eight children out: as runs of the `train-emotion` deployment (on the `gpu` work pool)
when that deployment exists, else as subflows in this process.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from emoverse.emotions import EMOTIONS, NEUTRAL, Emotion
from emoverse.errors import EmoverseError
from flows.params import DEFAULT_DATA_DIR, TrainingSettings
from models.evaluate import Evaluation, promotion_decision
from models.registry import ModelRegistry
from tasks.train import (
    evaluate_model_task,
    prepare_init_task,
    publish_family_task,
    register_model_task,
    train_model_task,
)

TRAIN_EMOTION_DEPLOYMENT = "train-emotion/train-emotion"
# In-process children trained at once. One by default: on a CPU they share the same cores,
# on one GPU its memory; more GPUs mean more `gpu` workers, not threads.
PARALLEL_TRAININGS = int(os.environ.get("EMOVERSE_PARALLEL_TRAININGS", "1"))
POLL_SECONDS = float(os.environ.get("EMOVERSE_POLL_SECONDS", "2"))


@flow(name="train-emotion", flow_run_name="train-{emotion}", persist_result=True)
def train_emotion(
    emotion: Emotion,
    data_dir: str = DEFAULT_DATA_DIR,
    base_version: int | None = None,
    settings: TrainingSettings = TrainingSettings(),  # noqa: B008 - an immutable default
) -> dict[str, Any]:
    """Fine-tune one emotion's child from the neutral base, evaluate it against the base, and
    register it: as champion only if it passes the promotion gate.

    Args:
        emotion: The emotion to train.
        data_dir: The run's data folder (its partitions and models; its registry unless
            `MLFLOW_TRACKING_URI` is set).
        base_version: The neutral base's registry version; default its champion.
        settings: Training and evaluation settings.
    """
    emotion = Emotion(emotion).value
    registry = ModelRegistry.for_data_dir(Path(data_dir))
    base = registry.get(NEUTRAL, version=base_version)
    if "evaluation" not in base.metrics:
        raise EmoverseError(
            f"emoverse-{NEUTRAL} v{base.version} has no evaluation to compare children with; "
            "train the family with the `train` flow"
        )
    base_eval = base.metrics["evaluation"]
    _, _, child_config = settings.stage_configs()
    trained = train_model_task(
        emotion,
        base.path,
        data_dir,
        child_config.to_dict(),
        parent=f"emoverse-{NEUTRAL} v{base.version}",
        min_poems=settings.min_poems,
    )
    if "reason" in trained:
        get_run_logger().warning("skipped %s: %s", emotion, trained["reason"])
        return {"emotion": emotion, "skipped": trained["reason"]}
    evaluation = evaluate_model_task(
        trained, data_dir, base=base_eval, samples=settings.eval_samples
    )
    promote, reason = promotion_decision(
        Evaluation.from_dict(evaluation), Evaluation.from_dict(base_eval)
    )
    get_run_logger().info("%s: %s", emotion, reason)
    record = register_model_task(trained, data_dir, evaluation, promote=promote, promotion=reason)
    return {"emotion": emotion, "record": record}


@flow(name="train")
def train(
    data_dir: str = DEFAULT_DATA_DIR,
    settings: TrainingSettings = TrainingSettings(),  # noqa: B008 - an immutable default
) -> dict[str, Any]:
    """Pretrain a foundation (scratch presets only), fine-tune and evaluate the neutral base,
    then train the eight children from it. Every stage reuses an identical earlier run, so a
    rerun with nothing changed trains nothing, and a retry trains only the children that
    failed. One child failing does not stop the others; the run then fails naming them.

    Args:
        data_dir: The run's data folder.
        settings: Training and evaluation settings.
    """
    foundation_config, base_config, _ = settings.stage_configs()
    init = prepare_init_task(settings.base_model, data_dir, foundation_config.to_dict())
    base = train_model_task(
        NEUTRAL,
        init,
        data_dir,
        base_config.to_dict(),
        parent=settings.base_model,
        min_poems=settings.min_poems,
    )
    if "reason" in base:
        raise EmoverseError(f"cannot train the neutral base model: {base['reason']}")
    base_eval = evaluate_model_task(base, data_dir, samples=settings.eval_samples)
    base_record = register_model_task(
        base, data_dir, base_eval, promotion="the neutral base: the reference children must beat"
    )

    outcomes = _train_children(data_dir, base_record["version"], settings)
    registered = [base_record] + [o["record"] for o in outcomes.values() if "record" in o]
    skipped = [
        {"emotion": e, "reason": o["skipped"]} for e, o in outcomes.items() if "skipped" in o
    ]
    failed = [e for e, o in outcomes.items() if "failed" in o]
    publish_family_task(registered, skipped, failed)
    if failed:
        details = "; ".join(f"{e}: {outcomes[e]['failed']}" for e in failed)
        raise RuntimeError(f"training failed for: {', '.join(failed)} ({details})")
    return {
        "registered": {r["emotion"]: r["version"] for r in registered},
        "champions": [r["emotion"] for r in registered if "champion" in r["aliases"]],
        "promotion": {r["emotion"]: r["promotion"] for r in registered},
        "skipped": {s["emotion"]: s["reason"] for s in skipped},
    }


def _train_children(
    data_dir: str, base_version: int, settings: TrainingSettings
) -> dict[str, dict[str, Any]]:
    """Each emotion's outcome: `{"record": ...}`, `{"skipped": reason}` or `{"failed": why}`."""
    if _deployment_exists(TRAIN_EMOTION_DEPLOYMENT):
        return _children_on_workers(data_dir, base_version, settings)
    get_run_logger().info(
        "no %s deployment: training the children in this process", TRAIN_EMOTION_DEPLOYMENT
    )

    def child(emotion: str) -> dict[str, Any]:
        state = train_emotion(emotion, data_dir, base_version, settings, return_state=True)
        if not state.is_completed():
            return {"failed": state.message or state.name}
        return state.result()

    with ThreadPoolExecutor(max_workers=PARALLEL_TRAININGS) as pool:
        return dict(zip(EMOTIONS, pool.map(child, EMOTIONS), strict=True))


def _deployment_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def _children_on_workers(
    data_dir: str, base_version: int, settings: TrainingSettings
) -> dict[str, dict[str, Any]]:
    """Start the eight `train-emotion` runs at once (linked to this run as subflows) and wait
    for all of them; the `gpu` work pool and concurrency limit decide how many train at a
    time."""
    logger = get_run_logger()
    runs = {
        emotion: run_deployment(
            TRAIN_EMOTION_DEPLOYMENT,
            parameters={
                "emotion": emotion,
                "data_dir": data_dir,
                "base_version": base_version,
                "settings": settings.model_dump(),
            },
            timeout=0,  # start them all, then wait below
        )
        for emotion in EMOTIONS
    }
    logger.info("started %d %s runs; waiting for them", len(runs), TRAIN_EMOTION_DEPLOYMENT)
    outcomes: dict[str, dict[str, Any]] = {}
    with get_client(sync_client=True) as client:
        while len(outcomes) < len(runs):
            for emotion, run in runs.items():
                if emotion in outcomes:
                    continue
                state = client.read_flow_run(run.id).state
                if state is None or not state.is_final():
                    continue
                if state.is_completed():
                    # A small record, persisted by the child where the results storage is
                    # shared (local disk on one host; object storage across hosts).
                    outcomes[emotion] = state.result()
                else:
                    outcomes[emotion] = {"failed": f"{state.name}: {state.message or ''}"}
                logger.info("%s finished: %s", emotion, state.name)
            if len(outcomes) < len(runs):
                time.sleep(POLL_SECONDS)
    return outcomes
