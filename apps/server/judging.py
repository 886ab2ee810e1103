"""Blind human judging: does the emotion reach a reader?

    GET  /judge         the page (apps/server/page.py): a poem by a model chosen at random,
                        its emotion hidden; the reader picks one of the nine labels, then sees
                        the answer
    GET  /judge/poem    {poem_id, poem}: the next poem to judge; sets the reader's token
                        (cookie `emoverse_reader`) when the request has none
    POST /judgements    {poem_id, guess} -> {correct, emotion, version, human_accuracy,
                        human_readers}; the poem's own reader only, not sooner than it can be
                        read, within the hourly limits (emoverse/judgements.py's rules)

Each emotion's current model (champion or not: the tally says which) and the neutral base
are the arms, drawn with equal chance: the base is one arm of up to nine, however few
emotions have a champion. The server remembers which model wrote each poem it handed out
(the last PENDING_MAX, in `Judging`), so the page never sees the emotion before the guess.
Answers go to the judgements store, one transaction each, and the model version's accuracy
is recorded in the registry as a metric.
"""

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from apps.server.cache import ModelCache
from apps.server.generation import write_one
from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL
from emoverse.errors import NoModelError
from emoverse.judgements import (
    Judgement,
    JudgementRefused,
    JudgementStore,
    ReaderRules,
    ReaderTokens,
    check_limits,
    check_reading_time,
)
from models.registry.model_registry import ModelRecord, ModelRegistry

PENDING_MAX = 1024  # poems handed out and not yet judged, newest kept
READER_COOKIE = "emoverse_reader"

router = APIRouter()


class JudgementBody(BaseModel):
    """The body of POST /judgements; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    poem_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    guess: Literal[LABELS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class HandedOut:
    emotion: str
    version: int
    poem: str
    reader: str
    at: float  # time.monotonic() when it was handed out


class Judging:
    """The poems handed out and not yet judged, the store answers go to, the rules they
    meet, and `writer`: a registry that may write (the server's own reads without the
    writers' lock)."""

    def __init__(
        self,
        store: JudgementStore,
        writer: Callable[[], ModelRegistry],
        rules: ReaderRules | None = None,
    ):
        self.store = store
        self.writer = writer
        self.rules = rules or ReaderRules()
        self.tokens = ReaderTokens(self.rules)
        self._pending: OrderedDict[str, HandedOut] = OrderedDict()
        self._lock = threading.Lock()

    def hand_out(self, record: ModelRecord, poem: str, reader: str = "") -> str:
        """The id the poem is judged by (by `reader` only)."""
        poem_id = secrets.token_urlsafe(12)
        handed = HandedOut(record.emotion, record.version, poem, reader, time.monotonic())
        with self._lock:
            self._pending[poem_id] = handed
            while len(self._pending) > PENDING_MAX:
                self._pending.popitem(last=False)
        return poem_id

    def take(self, poem_id: str) -> HandedOut | None:
        """A poem handed out, once; None if unknown."""
        with self._lock:
            return self._pending.pop(poem_id, None)

    def give_back(self, poem_id: str, handed: HandedOut) -> None:
        """A poem whose answer was not recorded (refused, or the store failed): still open."""
        with self._lock:
            self._pending[poem_id] = handed


def judgeable(models: ModelCache) -> list[str]:
    """The arms a poem to judge is drawn from: every emotion with a model, champion or not,
    and the neutral base, if it has one, as one arm of its own."""
    found = []
    for label in (*EMOTIONS, NEUTRAL):
        try:
            models.current(label)
        except NoModelError:
            continue
        found.append(label)
    return found


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/judge/poem")
async def poem_to_judge(request: Request, response: Response) -> dict[str, str]:
    judging: Judging = request.app.state.judging
    reader = judging.tokens.reader(request.cookies.get(READER_COOKIE))
    if reader is None:  # a new reader (limited per address)
        token = judging.tokens.issue(_address(request))
        reader = judging.tokens.reader(token) or ""
        response.set_cookie(READER_COOKIE, token, httponly=True, samesite="strict")
    models: ModelCache = request.app.state.models
    labels = await run_in_threadpool(judgeable, models)
    if not [label for label in labels if label != NEUTRAL]:
        raise NoModelError("no emotion model to judge yet; run `emoverse run` first")
    record, poem = await write_one(models, secrets.choice(labels), request)
    return {"poem_id": judging.hand_out(record, poem, reader), "poem": poem}


@router.post("/judgements", response_model=None)
def judge(body: JudgementBody, request: Request) -> dict[str, Any] | JSONResponse:
    judging: Judging = request.app.state.judging
    reader = judging.tokens.reader(request.cookies.get(READER_COOKIE))
    handed = judging.take(body.poem_id)
    if handed is None:
        message = "poem_id: unknown, or already judged; ask GET /judge/poem for a poem"
        return JSONResponse(status_code=422, content={"message": message})
    try:
        if reader is None or reader != handed.reader:
            raise JudgementRefused(
                "poem_id: handed to another reader; judge the poems GET /judge/poem gives you",
                status=422,
            )
        check_reading_time(judging.rules, handed.poem, time.monotonic() - handed.at)
        address = _address(request)
        check_limits(judging.store, judging.rules, reader, address)
        judgement = Judgement(handed.emotion, handed.version, body.guess, handed.poem)
        judging.store.add(judgement, reader=reader, address=address)
    except Exception:
        judging.give_back(body.poem_id, handed)  # a refused answer does not use the poem up
        raise
    emotion, version = handed.emotion, handed.version
    share = judging.store.accuracy()[(emotion, version)]
    readers = judging.store.readers().get((emotion, version), 0)
    judging.writer().record_human_accuracy(emotion, version, share)
    return {
        "correct": body.guess == emotion,
        "emotion": emotion,
        "version": version,
        "human_accuracy": share.to_dict(),
        "human_readers": readers,
    }
