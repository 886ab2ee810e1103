"""What the server offers: the labels, and the model each emotion uses now.

GET  /emotions   the nine labels
GET  /models     the model each emotion uses now (champion, or newest with a warning),
                 with each judge's fidelity (NRC, Empath, NADE; NADE's mean intensity of
                 the emotion and its rank test against the base), its readers' accuracy
                 from the judging page and how many readers gave it (a damaged judgements
                 file: left out, with a warning), and the conditional model's version (null
                 when none is registered: the page then offers only the emotions' own models)
"""

from typing import Any

from fastapi import APIRouter, Request

from apps.server.cache import ModelCache
from apps.server.errors import public_message
from emoverse.emotions import CONDITIONAL, LABELS
from emoverse.errors import NoModelError
from emoverse.judgements import JudgementStore, accuracy_or_warning
from emoverse.judges import JUDGES
from models.records import Evaluation
from models.registry.model_registry import CHAMPION

router = APIRouter()


# Light endpoints are coroutines: they never wait for a thread-pool slot that heavy
# requests (a first model load, registry queries) may all hold.
@router.get("/emotions")
async def emotions() -> dict[str, list[str]]:
    return {"emotions": list(LABELS)}


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    models: ModelCache = request.app.state.models
    store: JudgementStore = request.app.state.judgements
    found, missing = [], []
    human, readers, unreadable = accuracy_or_warning(store)
    for emotion in LABELS:
        try:
            record, warning = models.current(emotion)
        except NoModelError:
            missing.append(emotion)
            continue
        found.append(
            {
                "emotion": emotion,
                "version": record.version,
                "champion": CHAMPION in record.aliases,
                "warning": warning,
                "metrics": record.metrics,
                "parent": record.parent,
                "promotion": record.promotion,
                "created_ms": record.created_ms,
                "judges": _judges(record.evaluation),
                "human_accuracy": (
                    share.to_dict() if (share := human.get((emotion, record.version))) else None
                ),
                "human_readers": readers.get((emotion, record.version), 0),
            }
        )
    try:
        conditional, _ = models.current(CONDITIONAL)
        made = {"version": conditional.version, "champion": CHAMPION in conditional.aliases}
    except NoModelError:
        made = None
    answer: dict[str, Any] = {"models": found, "missing": missing, "conditional": made}
    if unreadable:
        answer["warnings"] = [public_message(unreadable)]
    return answer


def _judges(evaluation: Evaluation | None) -> dict[str, dict[str, Any] | None]:
    """Per judge: its fidelity (a share with interval and n), the base's and the p-value;
    NADE's mean intensity of the emotion, the base's and its rank test. None: not measured."""
    judged = evaluation.judges if evaluation else {}
    keys = ("fidelity", "base", "p_value", "mean_intensity", "base_mean_intensity", "rank_test")
    return {
        judge: {k: judged[judge][k] for k in keys if k in judged[judge]}
        if judge in judged
        else None
        for judge in JUDGES
    }
