"""What the server offers: the labels, and the model each emotion uses now.

GET  /emotions   the nine labels
GET  /models     the model each emotion uses now (champion, or newest with a warning),
                 with its readers' accuracy from the judging page and how many
                 readers gave it (a damaged judgements file: left out, with a warning)
"""

from typing import Any

from fastapi import APIRouter, Request

from apps.server.cache import ModelCache
from apps.server.errors import public_message
from emoverse.emotions import LABELS
from emoverse.errors import NoModelError
from emoverse.judgements import JudgementStore, accuracy_or_warning
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
                "human_accuracy": (
                    share.to_dict() if (share := human.get((emotion, record.version))) else None
                ),
                "human_readers": readers.get((emotion, record.version), 0),
            }
        )
    answer: dict[str, Any] = {"models": found, "missing": missing}
    if unreadable:
        answer["warnings"] = [public_message(unreadable)]
    return answer
