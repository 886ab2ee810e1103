"""The eight children, started together: as runs of the `train-emotion` deployment (on the
`gpu` work pool) when that deployment exists, else as subflows in this process. Each child
comes back as what it produced (a registry record or a skip) or as a FailedModel."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import Flow, get_client, get_run_logger
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from emoverse import settings as env
from models.records import FailedModel

TRAIN_EMOTION_DEPLOYMENT = "train-emotion/train-emotion"
AWAITING_GPU = "AwaitingGPU"  # the state of a child waiting for a `gpu` worker


def fan_out(child_flow: Flow, emotions: tuple[str, ...], **parameters: Any) -> dict[str, Any]:
    """Run `child_flow(emotion=e, **parameters)` for every emotion and wait for all of them;
    one failing does not stop the others. `parameters` must be JSON-able (they travel to
    workers)."""
    if _deployment_exists(TRAIN_EMOTION_DEPLOYMENT):
        return _on_workers(emotions, parameters)
    get_run_logger().info(
        "no %s deployment: training the children in this process", TRAIN_EMOTION_DEPLOYMENT
    )

    def child(emotion: str) -> Any:
        return _outcome(emotion, child_flow(emotion=emotion, **parameters, return_state=True))

    # In-process children share this machine's cores or GPU: EMOVERSE_PARALLEL_TRAININGS.
    with ThreadPoolExecutor(max_workers=env.parallel_trainings()) as pool:
        return dict(zip(emotions, pool.map(child, emotions), strict=True))


def _outcome(emotion: str, state: State, message: Callable[[State], str] | None = None) -> Any:
    if state.is_completed():
        # A small record, persisted by the child where the results storage is shared (local
        # disk on one host; object storage across hosts).
        return state.result()
    return FailedModel(emotion, message(state) if message else state.message or state.name)


def _deployment_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def _start(emotion: str, parameters: dict[str, Any]) -> FlowRun:
    """One `train-emotion` run, named as the flow names it (`train-joy`) from the start, and
    queued rather than late while it waits for a `gpu` worker: Prefect marks a run Late when
    it is still in the state named "Scheduled" past its start time (its late-runs service
    looks at that name only); a Scheduled state of another name is picked up by workers all
    the same (as Prefect's own AwaitingRetry and AwaitingConcurrencySlot are)."""
    run = run_deployment(
        TRAIN_EMOTION_DEPLOYMENT,
        parameters={"emotion": emotion, **parameters},
        flow_run_name=f"train-{emotion}",
        timeout=0,  # start them all, then wait
    )
    with get_client(sync_client=True) as client:
        # A worker polls every few seconds, so it has yet to see the run; should one take it in
        # this moment, the run still starts (it proposes Running from this state).
        client.set_flow_run_state(run.id, Scheduled(name=AWAITING_GPU))
    return run


def _on_workers(emotions: tuple[str, ...], parameters: dict[str, Any]) -> dict[str, Any]:
    """Start one `train-emotion` run per emotion at once (linked to this run as subflows) and
    poll until all are final; the `gpu` work pool and concurrency limit decide how many train
    at a time."""
    logger = get_run_logger()
    runs = {emotion: _start(emotion, parameters) for emotion in emotions}
    logger.info("started %d %s runs; waiting for them", len(runs), TRAIN_EMOTION_DEPLOYMENT)
    outcomes: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        while len(outcomes) < len(runs):
            for emotion, run in runs.items():
                if emotion in outcomes:
                    continue
                state = client.read_flow_run(run.id).state
                if state is None or not state.is_final():
                    continue
                outcomes[emotion] = _outcome(
                    emotion, state, lambda s: f"{s.name}: {s.message or ''}"
                )
                logger.info("%s finished: %s", emotion, state.name)
            if len(outcomes) < len(runs):
                time.sleep(env.poll_seconds())
    return outcomes
