"""Blind human judging: does the emotion reach a reader?

    GET  /judge         the page (apps/server/page.py): a poem by a champion chosen at random,
                        its emotion hidden; the reader picks one of the nine labels, then sees
                        the answer
    GET  /judge/poem    {poem_id, poem}: the next poem to judge
    POST /judgements    {poem_id, guess} -> {correct, emotion, version, human_accuracy}

The server remembers which model wrote each poem it handed out (the last PENDING_MAX, in
`Judging`), so the page never sees the emotion before the guess. Answers go to the judgements
store, one transaction each, and the model version's accuracy is recorded in the registry as a
metric.
"""

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from apps.server.cache import ModelCache
from apps.server.generation import write_one
from emoverse.emotions import LABELS
from emoverse.errors import NoModelError
from emoverse.judgements import Judgement, JudgementStore
from models.registry.model_registry import CHAMPION, ModelRecord, ModelRegistry

PENDING_MAX = 1024  # poems handed out and not yet judged, newest kept

router = APIRouter()


class JudgementBody(BaseModel):
    """The body of POST /judgements; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    poem_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    guess: Literal[LABELS]  # type: ignore[valid-type]


class Judging:
    """The poems handed out and not yet judged, the store answers go to, and `writer`: a
    registry that may write (the server's own reads without the writers' lock)."""

    def __init__(self, store: JudgementStore, writer: Callable[[], ModelRegistry]):
        self.store = store
        self.writer = writer
        self._pending: OrderedDict[str, tuple[str, int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def hand_out(self, record: ModelRecord, poem: str) -> str:
        """The id the poem is judged by."""
        poem_id = secrets.token_urlsafe(12)
        with self._lock:
            self._pending[poem_id] = (record.emotion, record.version, poem)
            while len(self._pending) > PENDING_MAX:
                self._pending.popitem(last=False)
        return poem_id

    def take(self, poem_id: str) -> tuple[str, int, str] | None:
        """(emotion, version, poem) of a poem handed out, once; None if unknown."""
        with self._lock:
            return self._pending.pop(poem_id, None)


def _champions(models: ModelCache) -> list[str]:
    found = []
    for label in LABELS:
        try:
            record, _ = models.current(label)
        except NoModelError:
            continue
        if CHAMPION in record.aliases:
            found.append(label)
    return found


@router.get("/judge/poem")
async def poem_to_judge(request: Request) -> dict[str, str]:
    models: ModelCache = request.app.state.models
    labels = await run_in_threadpool(_champions, models)
    if not labels:
        raise NoModelError("no champion to judge yet; run `emoverse run` first")
    record, poem = await write_one(models, secrets.choice(labels), request)
    return {"poem_id": request.app.state.judging.hand_out(record, poem), "poem": poem}


@router.post("/judgements", response_model=None)
def judge(body: JudgementBody, request: Request) -> dict[str, Any] | JSONResponse:
    judging: Judging = request.app.state.judging
    handed_out = judging.take(body.poem_id)
    if handed_out is None:
        message = "poem_id: unknown, or already judged; ask GET /judge/poem for a poem"
        return JSONResponse(status_code=422, content={"message": message})
    emotion, version, poem = handed_out
    judging.store.add(Judgement(emotion, version, body.guess, poem))
    share = judging.store.accuracy()[(emotion, version)]
    judging.writer().record_human_accuracy(emotion, version, share)
    return {
        "correct": body.guess == emotion,
        "emotion": emotion,
        "version": version,
        "human_accuracy": share.to_dict(),
    }
