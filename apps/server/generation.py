"""POST /generate: poems from an emotion's model, a dialled one or a blend.

    POST /generate   {emotion, model?, strength?, prompt?, n?, seed?, max_new_tokens?, temperature?,
                      top_k?, top_p?, no_repeat_ngram_size?, lines?, stanzas?, rhyme?} or
                      {blend: {emotion: weight},
                      ...} -> poems, the version that wrote them, and the recipe of a dialled
                      or blended model (models/generation/blend.py: base + sum w * (child - base))
    POST /generate?stream=true   the same as server-sent events: `token` events
                      {poem, text} as the poems are written, then `done` with the same JSON

The body's types and bounds are pydantic's; its rules and the request built from it are
apps/requests.py's, as for the CLI. The request is the loaded model's `Batcher` job
(apps/batcher.py): requests arriving together are written in one batch; a full queue is a 503
with Retry-After, a request out of time a 504, and a client that goes away stops its poems.
`write_one` is the same path for one poem (the judging page's).
"""

import asyncio
import json
import secrets
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from apps.batcher import Batcher, Job
from apps.requests import FIELDS, OPTIONS, RequestRuleError, Wanted, recipe_weights, resolve
from apps.server.cache import ModelCache
from emoverse.emotions import LABELS, model_name
from emoverse.errors import EmoverseError
from models.generation.blend import MAX_BLEND_EMOTIONS
from models.generation.choice import ModelChoice
from models.generation.generate import (
    BOUNDS,
    MAX_PROMPT_CHARS,
    GenerationRequest,
    SamplingSettings,
)
from models.registry.model_registry import CHAMPION, ModelRecord

# Fewer poems per request than the CLI allows: one request's poems must not take much of a
# model's batch while other clients wait.
SERVER_MAX_N = 8
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there

_DEFAULT_REQUEST = GenerationRequest()
_DEFAULT_SAMPLING = SamplingSettings()

router = APIRouter()


def _bounded(name: str, default: Any, hi: float | None = None) -> Any:
    lo, top = BOUNDS[name]
    # NaN and Infinity (which Python's JSON reader takes) are no numbers here.
    return Field(default, ge=lo, le=top if hi is None else hi, allow_inf_nan=False)


class GenerateBody(BaseModel):
    """The body of POST /generate. Unknown fields are refused, so a misspelt option is a 422
    naming it rather than silently ignored; types are strict (`"n": true` or `"n": "3"` is a
    422, not 1 or 3)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    emotion: Literal[LABELS] | None = None  # type: ignore[valid-type]
    # Which model writes the emotion (models/generation/choice.py): its own, the conditional
    # one, or the better of the two as the registry records it.
    model: ModelChoice = "family"
    # The emotion's dial: 0 the base it was trained from, 1 its own model (the default).
    strength: float | None = _bounded("strength", None)
    # Instead of emotion: {emotion: weight}, base + sum weight * (child - base).
    blend: (
        dict[str, Annotated[float, Field(ge=BOUNDS["strength"][0], le=BOUNDS["strength"][1])]]
        | None
    ) = Field(None, max_length=MAX_BLEND_EMOTIONS)
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    n: int = _bounded("n", 1, hi=SERVER_MAX_N)
    seed: int | None = _bounded("seed", None)  # none given: a random one, echoed back
    max_new_tokens: int = _bounded("max_new_tokens", _DEFAULT_REQUEST.max_new_tokens)
    temperature: float = _bounded("temperature", _DEFAULT_SAMPLING.temperature)
    top_k: int = _bounded("top_k", _DEFAULT_SAMPLING.top_k)
    top_p: float = _bounded("top_p", _DEFAULT_SAMPLING.top_p)
    no_repeat_ngram_size: int = _bounded(
        "no_repeat_ngram_size", _DEFAULT_SAMPLING.no_repeat_ngram_size
    )
    # Form (its rules: apps/requests.py): exact lines, stanzas, a rhyme scheme or "none".
    lines: int | None = _bounded("lines", None)
    stanzas: int | None = _bounded("stanzas", None)
    rhyme: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _one_model(self) -> "GenerateBody":
        try:  # the rules the CLI checks too; a ValueError here is a 422 like any other
            recipe_weights(self.emotion, self.model, self.strength, self.blend, FIELDS)
        except RequestRuleError as exc:
            raise ValueError(str(exc)) from None
        return self

    def wanted(self, seed: int) -> Wanted:
        """What to generate, with `seed` (the body's, or a random one)."""
        return resolve(
            emotion=self.emotion,
            model=self.model,
            strength=self.strength,
            blend=self.blend,
            options={**self.model_dump(include=set(OPTIONS)), "seed": seed},
        )


@router.post("/generate", response_model=None)
async def generate(
    body: GenerateBody, request: Request, stream: bool = False
) -> dict[str, Any] | JSONResponse | StreamingResponse:
    models: ModelCache = request.app.state.models
    seed = body.seed if body.seed is not None else secrets.randbelow(BOUNDS["seed"][1] + 1)
    wanted = body.wanted(seed)  # checked before a model load, so bad input never costs one
    poems = wanted.request
    recipe = None
    if wanted.weights is None and wanted.model != "family":
        choice = await run_in_threadpool(models.choose, wanted.emotion, wanted.model)
        record, warning = choice.record, choice.warning
        batcher = await run_in_threadpool(models.batcher, record)
        poems = replace(poems, control=choice.control)
    elif wanted.weights is None:
        record, warning, batcher = await _batcher_for(models, wanted.emotion)
    else:
        found = models.cached_dial(wanted.weights)
        if found is None:
            found = await run_in_threadpool(models.dialled, wanted.weights)
        recipe, batcher = found
        # The answer's emotion and version: the heaviest in the recipe (the first of ties).
        record = max(recipe.parts, key=lambda p: p.weight).record
        warning = "; ".join([*recipe.warnings, *filter(None, [wanted.dial_warning])]) or None
    if poems.form is not None:  # the rhyme index, built once per vocabulary: seconds
        await run_in_threadpool(batcher.generator.form_tables)
    rows = batcher.generator.rows(poems)  # the model's own bounds (context): a 422
    job = batcher.submit(poems, rows, stream=stream)  # a full queue: a 503
    answer = {
        "emotion": wanted.emotion or record.emotion,
        "model": model_name(record.emotion),
        "version": record.version,
        "champion": CHAMPION in record.aliases,
        "warning": warning,
        "seed": seed,
        "prompt": body.prompt,
        "recipe": recipe.to_dict() if recipe is not None else None,
    }
    if stream:
        return StreamingResponse(
            _events(job, request, answer),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        async for event in _job_events(job, request):
            if event[0] == "done":
                return {**answer, "poems": event[1]}
            if event[0] == "error":
                return JSONResponse(status_code=event[1], content={"message": event[2]})
        return JSONResponse(status_code=499, content={"message": "the client went away"})
    finally:
        job.cancel()  # a no-op once done; otherwise (client gone) the rows stop


async def write_one(models: ModelCache, emotion: str, request: Request) -> tuple[ModelRecord, str]:
    """One poem from the emotion's current model, from a random seed."""
    record, _, batcher = await _batcher_for(models, emotion)
    wanted = GenerationRequest(n=1, seed=secrets.randbelow(BOUNDS["seed"][1] + 1))
    job = batcher.submit(wanted, batcher.generator.rows(wanted), stream=False)
    try:
        async for event in _job_events(job, request):
            if event[0] == "done":
                return record, event[1][0]
            if event[0] == "error":
                raise EmoverseError(event[2])
        raise EmoverseError("the client went away")
    finally:
        job.cancel()


async def _batcher_for(models: ModelCache, emotion: str) -> tuple[ModelRecord, str | None, Batcher]:
    """The emotion's record, warning and loaded batcher; the registry (sqlite) and a first
    load block, so they run off the event loop."""
    found = models.cached(emotion)
    if found is not None:
        return found
    record, warning = await run_in_threadpool(models.current, emotion)
    return record, warning, await run_in_threadpool(models.batcher, record)


async def _job_events(job: Job, request: Request) -> Any:
    """The job's events as they come; stops (without an event) once the client is gone."""
    while True:
        try:
            event = await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
        except TimeoutError:
            if await request.is_disconnected():
                return
            continue
        yield event
        if event[0] in ("done", "error"):
            return
        if await request.is_disconnected():
            return


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(job: Job, request: Request, answer: dict[str, Any]) -> Any:
    """Server-sent events: `token` {poem, text} per new piece of text, then `done` with the
    answer as POST /generate gives it, or `error` {status, message}."""
    try:
        async for event in _job_events(job, request):
            if event[0] == "token":
                yield _sse("token", {"poem": event[1], "text": event[2]})
            elif event[0] == "done":
                yield _sse("done", {**answer, "poems": event[1]})
            else:
                yield _sse("error", {"status": event[1], "message": event[2]})
    finally:
        job.cancel()  # the client went away (or the stream ended): stop writing
