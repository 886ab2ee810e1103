"""`emoverse serve`: the registry's models over HTTP (FastAPI on uvicorn), and a small page.

    GET  /           a page: choose an emotion, type a first line, read the poem
    GET  /emotions   the nine labels
    GET  /models     the model each emotion uses now (champion, or newest with a warning)
    POST /generate   {emotion, model?, strength?, prompt?, n?, seed?, max_new_tokens?, temperature?,
                      top_k?, top_p?, no_repeat_ngram_size?} or {blend: {emotion: weight},
                      ...} -> poems, the version that wrote them, and the recipe of a dialled
                      or blended model (models/generation/blend.py: base + sum w * (child - base))
    POST /generate?stream=true   the same as server-sent events: `token` events
                      {poem, text} as the poems are written, then `done` with the same JSON
    GET  /judge, GET /judge/poem, POST /judgements   blind human judging (apps/judge.py)

Bad input gets a 422 whose `message` names the field. Every request asks the registry (through
a short TTL) which version is current, so `emoverse models --promote/--rollback` takes effect
without a restart; loaded models sit in a small LRU cache keyed by (emotion, version, folder);
a dialled or blended model is merged once (cached on disk under the data dir) and then loaded
into the same cache, so the cache bounds the memory of those too.
Each loaded model has a `Batcher` (apps/batcher.py): requests arriving together are
written in one batch; a full queue is a 503 with Retry-After, a request out of time a 504,
and a client that goes away stops its poems.
"""

import asyncio
import functools
import ipaddress
import json
import logging
import math
import re
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.batcher import Batcher, BatchSettings, Job, QueueFull, Worker
from apps.judge import add_judging
from emoverse import settings
from emoverse.emotions import EMOTIONS, LABELS, NEUTRAL, model_name
from emoverse.errors import (
    EmoverseError,
    GenerationSettingError,
    IncompatibleModelsError,
    NoModelError,
)
from emoverse.judgements import JudgementStore
from emoverse.paths import RunPaths
from models.generation.blend import (
    FLUENT_MAX_STRENGTH,
    MAX_BLEND_EMOTIONS,
    Recipe,
    check_weights,
    dial_warning,
    materialize,
    resolve_recipe,
)
from models.generation.choice import Choice, ModelChoice, choose_model
from models.generation.generate import (
    BOUNDS,
    MAX_PROMPT_CHARS,
    GenerationRequest,
    PoemGenerator,
    SamplingSettings,
)
from models.registry.model_registry import CHAMPION, ModelRecord, ModelRegistry

log = logging.getLogger("emoverse.serve")

# Fewer poems per request than the CLI allows: one request's poems must not take much of a
# model's batch while other clients wait.
SERVER_MAX_N = 8
DEFAULT_CACHE_SIZE = 4  # loaded models kept; nine GPT-2-124M children would take ~4.5 GB
MAX_DIALS_REMEMBERED = 256  # recent recipes the event loop answers without the thread pool
DEFAULT_REGISTRY_TTL_S = 2.0  # how stale a "which version is current" answer may be
SWITCH_INTERVAL_S = 0.0005  # the server process's GIL slice (Python's default: 0.005)
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there

_DEFAULT_REQUEST = GenerationRequest()
_DEFAULT_SAMPLING = SamplingSettings()


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
    # Which model writes the emotion (models/generation/choice.py): its own, the conditional one,
    # or the
    # better of the two as the registry records it.
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

    @model_validator(mode="after")
    def _one_model(self) -> "GenerateBody":
        if (self.emotion is None) == (self.blend is None) or (
            self.blend is not None and self.strength is not None
        ):
            raise ValueError(
                "give either emotion (with strength) or blend ({emotion: weight, ...})"
            )
        if self.model != "family" and (self.blend is not None or self.strength is not None):
            raise ValueError(
                f"model {self.model} writes one emotion's poems as they are; strength and "
                "blend dial the family's children (model family)"
            )
        if self.blend is not None:
            try:
                self.blend = check_weights(self.blend)
            except GenerationSettingError as exc:
                raise ValueError(str(exc)) from None
        if self.strength is not None and self.strength != 1 and self.emotion == NEUTRAL:
            raise ValueError(
                f"strength dials one of the eight emotions ({', '.join(EMOTIONS)}), not "
                "neutral, the base itself"
            )
        return self

    def weights(self) -> dict[str, float] | None:
        """The recipe's weights, or None for the emotion's own model."""
        if self.blend is not None:
            return self.blend
        if self.strength is None or self.strength == 1:
            return None  # strength 1 is the child itself
        return {self.emotion: self.strength}

    def to_request(self, seed: int) -> GenerationRequest:
        return GenerationRequest.from_options(
            **self.model_dump(exclude={"emotion", "seed", "strength", "blend", "model"}),
            seed=seed,
        )


class ModelCache:
    """Which version each emotion uses now (asked of the registry at most every `ttl_s`),
    and the last `size` loaded models, each with its batcher. Thread-safe: its calls run in
    FastAPI's thread pool."""

    def __init__(
        self,
        registry: ModelRegistry,
        size: int,
        ttl_s: float,
        batching: BatchSettings | None = None,
        blends_dir: Path | None = None,
    ):
        self.registry = registry
        self.blends_dir = blends_dir  # where dialled and blended models are merged to
        self.size = size
        self.ttl_s = ttl_s
        self.batching = batching or BatchSettings()
        self.loads = 0  # models loaded so far (tests and the bench read it)
        self._current: dict[str, tuple[float, ModelRecord, str | None]] = {}
        self._choices: dict[tuple[str, str], tuple[float, Choice]] = {}  # conditional, best
        self._versions: dict[tuple[str, int], ModelRecord] = {}  # for a recipe's base
        # weights -> (when resolved, recipe, batcher): a repeated recipe skips the thread pool
        self._dials: dict[tuple[tuple[str, float], ...], tuple[float, Recipe, Batcher]] = {}
        self._batchers: OrderedDict[tuple[str, int, str], Batcher] = OrderedDict()
        self._worker = Worker()  # one thread steps every loaded model's batches
        self._registry_lock = threading.Lock()  # one sqlite session, one query at a time
        self._load_lock = threading.Lock()  # concurrent first requests load a model once

    def current(self, emotion: str) -> tuple[ModelRecord, str | None]:
        """The emotion's record and the fallback warning (None for a champion)."""
        now = time.monotonic()
        with self._registry_lock:
            cached = self._current.get(emotion)
            if cached is not None and now - cached[0] < self.ttl_s:
                return cached[1], cached[2]
            record, warning = self.registry.current(emotion)
            if warning and (cached is None or cached[1] != record):
                log.warning(warning)
            self._current[emotion] = (now, record, warning)
            return record, warning

    def choose(self, emotion: str, model: str) -> Choice:
        """`models.generation.choice.choose_model`, asked of the registry at most every `ttl_s`."""
        now = time.monotonic()
        with self._registry_lock:
            cached = self._choices.get((emotion, model))
            if cached is not None and now - cached[0] < self.ttl_s:
                return cached[1]
            choice = choose_model(self.registry, emotion, model)
            if choice.warning and (cached is None or cached[1] != choice):
                log.warning(choice.warning)
            self._choices[(emotion, model)] = (now, choice)
            return choice

    def cached(self, emotion: str) -> tuple[ModelRecord, str | None, Batcher] | None:
        """The emotion's current record, warning and loaded batcher when all three are at
        hand without blocking (no registry query, no load, no lock waited for); else None.
        The event loop tries this before it sends the blocking path to a thread."""
        now = time.monotonic()
        cached = self._current.get(emotion)
        if cached is None or now - cached[0] >= self.ttl_s:
            return None
        record, warning = cached[1], cached[2]
        batcher = self._batchers.get((record.emotion, record.version, record.path))
        if batcher is None:
            return None
        if self._load_lock.acquire(blocking=False):  # keep the LRU order when we can
            try:
                if batcher is self._batchers.get((record.emotion, record.version, record.path)):
                    self._batchers.move_to_end((record.emotion, record.version, record.path))
            finally:
                self._load_lock.release()
        return record, warning, batcher

    def get(self, emotion: str, *, version: int) -> ModelRecord:
        """One version's record (a recipe's base); its folder never changes, so it is asked
        of the registry once."""
        with self._registry_lock:
            if (emotion, version) not in self._versions:
                record = self.registry.get(emotion, version=version)
                self._versions[(emotion, version)] = record
            return self._versions[(emotion, version)]

    def dialled(self, weights: dict[str, float]) -> tuple[Recipe, Batcher]:
        """The recipe of `weights` from the current records, and the batcher of its model:
        the base's or the child's own where the recipe is one of them, else the merged
        folder (merged on the first request of a new recipe), loaded into this same cache."""
        if self.blends_dir is None:
            raise EmoverseError("this server has no folder to merge dialled models into")
        now = time.monotonic()
        recipe = resolve_recipe(self, weights)
        if (own := recipe.shortcut()) is not None:
            record = recipe.base if own == recipe.base.path else recipe.active[0].record
            batcher = self.batcher(record)
        else:
            folder = materialize(recipe, self.blends_dir)
            batcher = self._loaded(("blend", 0, str(folder)), str(folder))
        with self._load_lock:
            if batcher in self._batchers.values():  # not evicted meanwhile
                self._dials[tuple(weights.items())] = (now, recipe, batcher)
                while len(self._dials) > MAX_DIALS_REMEMBERED:
                    del self._dials[next(iter(self._dials))]
        return recipe, batcher

    def cached_dial(self, weights: dict[str, float]) -> tuple[Recipe, Batcher] | None:
        """`dialled(weights)` when resolved less than `ttl_s` ago and its model is still
        loaded; else None (the event loop's fast path, as `cached` is for one emotion)."""
        found = self._dials.get(tuple(weights.items()))
        if found is None or time.monotonic() - found[0] >= self.ttl_s:
            return None
        _, recipe, batcher = found
        if batcher not in self._batchers.values():
            return None
        if self._load_lock.acquire(blocking=False):  # keep the LRU order when we can
            try:
                for key, loaded in self._batchers.items():
                    if loaded is batcher:
                        self._batchers.move_to_end(key)
                        break
            finally:
                self._load_lock.release()
        return recipe, batcher

    def batcher(self, record: ModelRecord) -> Batcher:
        """The record's loaded model and its batcher (loaded on first use)."""
        key = (record.emotion, record.version, record.path)
        return self._loaded(key, record.path, record.weights)

    def _loaded(
        self, key: tuple[str, int, str], folder: str, weights: dict[str, Any] | None = None
    ) -> Batcher:
        """`weights`: the registry's digests of a registered folder, checked on load."""
        with self._load_lock:
            if key in self._batchers:
                self._batchers.move_to_end(key)
                return self._batchers[key]
            batcher = Batcher(PoemGenerator(folder, weights), self.batching, self._worker)
            self.loads += 1
            self._batchers[key] = batcher
            while len(self._batchers) > self.size:
                evicted = self._batchers.popitem(last=False)[1]
                evicted.close()  # ends once its work is done
                # No reference may keep an evicted model in memory.
                for weights in [w for w, (_, _, b) in self._dials.items() if b is evicted]:
                    del self._dials[weights]
            return batcher

    def generator(self, record: ModelRecord) -> PoemGenerator:
        return self.batcher(record).generator

    def close(self) -> None:
        with self._load_lock:
            for batcher in self._batchers.values():
                batcher.close()
            self._batchers.clear()


class BodyLimit:
    """Refuse a request body over `max_bytes` with a 413: by its Content-Length before it is
    read, or (chunked) as soon as what arrived passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(status_code=413, content={"message": self._message()})
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes"


_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"`;,()]+/)*[^\s'\"`;,()]*")


def public_message(text: str) -> str:
    """`text` with server-side paths left out: a client learns what, not where."""
    return _PATH.sub("<server path>", text)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        if e.get("type") == "json_invalid":  # its loc holds a character offset, not a field
            why = (e.get("ctx") or {}).get("error", "")
            parts.append(f"body: invalid JSON ({why})" if why else "body: invalid JSON")
        else:
            parts.append(f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(
    data_dir: Path,
    *,
    cache_size: int = DEFAULT_CACHE_SIZE,
    registry_ttl_s: float = DEFAULT_REGISTRY_TTL_S,
    batching: BatchSettings | None = None,
    max_body_bytes: int | None = None,
    trusted_hosts: list[str] | None = None,
) -> FastAPI:
    """The app over the registry of `data_dir` (or `MLFLOW_TRACKING_URI`). Bodies over
    `max_body_bytes` (default: the setting) are a 413; with `trusted_hosts`, a request naming
    another Host is a 400."""
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)
    models = ModelCache(
        registry, cache_size, registry_ttl_s, batching, blends_dir=RunPaths(data_dir).blends
    )
    app = FastAPI(title="emoverse", summary="Emotion-conditioned poetry from the model registry")
    app.state.models = models
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes or settings.max_body_bytes())
    if trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)

    @app.exception_handler(413)
    async def too_large(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=413, content={"message": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The input is not echoed back: it may be large, or not fit for a JSON answer.
        errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
        errors = jsonable_encoder(errors, custom_encoder={float: _finite})
        return JSONResponse(
            status_code=422, content={"detail": errors, "message": _validation_message(errors)}
        )

    @app.exception_handler(GenerationSettingError)
    async def invalid_setting(request: Request, exc: GenerationSettingError) -> JSONResponse:
        # Bounds only the loaded model knows (its context), in the same shape as any 422.
        detail = [{"loc": ["body", exc.option], "msg": exc.problem, "type": "value_error"}]
        return JSONResponse(
            status_code=422, content={"detail": detail, "message": f"{exc.option}: {exc.problem}"}
        )

    @app.exception_handler(QueueFull)
    async def busy(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"message": str(exc)},
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(IncompatibleModelsError)
    async def incompatible(request: Request, exc: IncompatibleModelsError) -> JSONResponse:
        detail = [{"loc": ["body", "blend"], "msg": str(exc), "type": "value_error"}]
        return JSONResponse(status_code=422, content={"detail": detail, "message": str(exc)})

    @app.exception_handler(NoModelError)
    async def no_model(request: Request, exc: NoModelError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"message": public_message(str(exc))})

    @app.exception_handler(EmoverseError)
    async def unavailable(request: Request, exc: EmoverseError) -> JSONResponse:
        # A registered folder that is gone, damaged or holds pickled weights: the server's
        # problem. Its log has the whole message; the client gets it without paths.
        log.error("%s", exc)
        return JSONResponse(status_code=503, content={"message": public_message(str(exc))})

    # Light endpoints are coroutines: they never wait for a thread-pool slot that heavy
    # requests (a first model load, registry queries) may all hold.
    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/emotions")
    async def emotions() -> dict[str, list[str]]:
        return {"emotions": list(LABELS)}

    @app.get("/models")
    def list_models() -> dict[str, Any]:
        found, missing = [], []
        human = JudgementStore(RunPaths(data_dir).judgements_db).accuracy()
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
                }
            )
        return {"models": found, "missing": missing}

    @app.post("/generate", response_model=None)
    async def generate(
        body: GenerateBody, request: Request, stream: bool = False
    ) -> dict[str, Any] | JSONResponse | StreamingResponse:
        seed = body.seed if body.seed is not None else secrets.randbelow(BOUNDS["seed"][1] + 1)
        wanted = body.to_request(seed)
        wanted.validate()  # before a model load, so bad input never costs one
        weights = body.weights()
        recipe = None
        if weights is None and body.model != "family":
            choice = await run_in_threadpool(models.choose, body.emotion, body.model)
            record, warning = choice.record, choice.warning
            batcher = await run_in_threadpool(models.batcher, record)
            wanted = replace(wanted, control=choice.control)
        elif weights is None:
            record, warning, batcher = await _batcher_for(models, body.emotion)
        else:
            found = models.cached_dial(weights)
            if found is None:
                found = await run_in_threadpool(models.dialled, weights)
            recipe, batcher = found
            # The answer's emotion and version: the heaviest in the recipe (the first of ties).
            record = max(recipe.parts, key=lambda p: p.weight).record
            warnings = [*recipe.warnings, *filter(None, [dial_warning(weights)])]
            warning = "; ".join(warnings) or None
        rows = batcher.generator.rows(wanted)  # the model's own bounds (context): a 422
        job = batcher.submit(wanted, rows, stream=stream)  # a full queue: a 503
        answer = {
            "emotion": body.emotion or record.emotion,
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

    async def write_one(emotion: str, request: Request) -> tuple[ModelRecord, str]:
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

    add_judging(
        app,
        models,
        JudgementStore(RunPaths(data_dir).judgements_db),
        write_one,
        functools.cache(lambda: ModelRegistry.for_data_dir(data_dir)),
    )
    return app


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


def _finite(value: float) -> Any:
    return value if math.isfinite(value) else str(value)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    batching: BatchSettings | None = None,
) -> None:
    """Serve until interrupted."""
    import uvicorn

    trusted = settings.trusted_hosts()
    if not is_loopback(host):
        log.warning("serving on %s: anyone who can reach it may generate; there is no auth", host)
        if not trusted:
            log.warning("set EMOVERSE_TRUSTED_HOSTS to the names clients use to reach it")
    app = create_app(data_dir, batching=batching, trusted_hosts=trusted)
    # Short GIL slices: the worker thread's many short torch calls then wait less for the
    # event loop (on 2 CPU cores, 16% more requests/s at 32 clients with scratch:tiny).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    uvicorn.Server(server_config(app, host=host, port=port, log_level="info")).run()


def server_config(app: FastAPI, **options: Any) -> Any:
    """uvicorn's settings: at most EMOVERSE_MAX_CONNECTIONS connections at once (more get a
    503), idle keep-alive connections closed after EMOVERSE_KEEPALIVE_S."""
    import uvicorn

    return uvicorn.Config(
        app,
        limit_concurrency=settings.max_connections(),
        timeout_keep_alive=settings.keepalive_s(),  # type: ignore[arg-type]
        **options,
    )


@contextmanager
def running_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` on uvicorn from a background thread for the duration of the block; yield its
    base URL. Port 0 takes a free one (tests, the bench)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emoverse</title>
<style>
  body { font-family: Georgia, serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem;
         color: #222; background: #fdfcf8; }
  label { display: block; margin: .8rem 0 .2rem; font: .9rem sans-serif; }
  select, input, button { font-size: 1rem; padding: .3rem; }
  input { width: 100%; box-sizing: border-box; }
  button { margin-top: 1rem; }
  #poem { white-space: pre-wrap; font: 1.1rem/1.5 Georgia, serif; margin-top: 1.5rem; }
  #meta { color: #666; font: .85rem sans-serif; }
  #warning { color: #8a6d00; font: .9rem sans-serif; }
  #error { color: #b00020; font: .9rem sans-serif; }
  .hint { color: #666; }
</style>
</head>
<body>
<h1>emoverse</h1>
<p>A poem in the register of an emotion, written by that emotion's own model.</p>
<form id="form">
  <label for="emotion">Emotion</label>
  <select id="emotion" name="emotion" required></select>
  <label for="model">Model</label>
  <select id="model" name="model">
    <option value="family" selected>the emotion's own model</option>
    <option value="conditional">the conditional model (one for every emotion)</option>
    <option value="best">whichever of the two writes it better</option>
  </select>
  <label for="strength">Strength <output id="strength-value" for="strength">1</output>
    <span class="hint">(0: the neutral base, 1: the emotion's own model)</span></label>
  <input id="strength" name="strength" type="range" min="0" max="__FLUENT_MAX__" step="0.1"
         value="1">
  <label for="second">Blend with a second emotion (optional)</label>
  <select id="second" name="second"><option value="">none</option></select>
  <label for="second-weight">Its weight <output id="second-weight-value"
    for="second-weight">0.5</output></label>
  <input id="second-weight" name="second-weight" type="range" min="0" max="__FLUENT_MAX__"
         step="0.1" value="0.5" disabled>
  <label for="first-line">First line (optional)</label>
  <input id="first-line" name="first-line" maxlength="500" autocomplete="off"
         placeholder="Shall I compare thee to a summer's day?">
  <button id="write" type="submit">Write a poem</button>
</form>
<p id="error" role="alert" hidden></p>
<p id="warning" hidden></p>
<pre id="poem" aria-live="polite"></pre>
<p id="meta"></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);

function show(id, text) { $(id).textContent = text || ""; $(id).hidden = !text; }

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: say the status below */ }
  if (!response.ok) {
    throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// Server-sent events from a fetch: `token` events go to onToken; resolves with the `done`
// event's answer, rejects with an `error` event's message.
async function readEvents(response, onToken) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { throw new Error("the stream ended before the poem did"); }
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\\n\\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\\n")) {
        if (line.startsWith("event: ")) { name = line.slice(7); }
        else if (line.startsWith("data: ")) { data += line.slice(6); }
      }
      const payload = JSON.parse(data);
      if (name === "token") { onToken(payload); }
      else if (name === "done") { reader.cancel(); return payload; }
      else if (name === "error") { throw new Error(payload.message); }
    }
  }
}

async function loadEmotions() {
  try {
    const [emotions, models] = await Promise.all([getJSON("/emotions"), getJSON("/models")]);
    const byEmotion = Object.fromEntries(models.models.map((m) => [m.emotion, m]));
    for (const name of emotions.emotions) {
      const m = byEmotion[name];
      const option = new Option(
        m ? `${name} (v${m.version}${m.champion ? "" : ", not promoted"})` : `${name} (no model)`,
        name);
      option.disabled = !m;
      $("emotion").append(option);
    }
    for (const name of emotions.emotions.filter((e) => e !== "neutral")) {
      const m = byEmotion[name];
      const option = new Option(m ? `${name} (v${m.version})` : `${name} (no model)`, name);
      option.disabled = !m;
      $("second").append(option);
    }
    const first = [...$("emotion").options].find((o) => !o.disabled);
    if (first) {
      first.selected = true;
    } else {
      show("error", "the registry holds no models yet");
    }
  } catch (e) {
    show("error", `cannot list the models: ${e.message}`);
  }
}

// The dial: the strength and the second emotion's weight show their values; neither applies
// to the neutral base, and the weight only with a second emotion.
function syncDial() {
  $("strength-value").textContent = $("strength").value;
  $("second-weight-value").textContent = $("second-weight").value;
  // Only the family's children are dialled or blended.
  const fixed = $("emotion").value === "neutral" || $("model").value !== "family";
  $("strength").disabled = fixed;
  $("second").disabled = fixed;
  $("second-weight").disabled = fixed || !$("second").value;
}
for (const id of ["strength", "second-weight", "emotion", "second", "model"]) {
  $(id).addEventListener("input", syncDial);
  $(id).addEventListener("change", syncDial);
}

// What to ask for: the emotion's own model, a dialled one, or a blend of two.
function modelPart() {
  const emotion = $("emotion").value;
  const strength = Number($("strength").value);
  const second = $("second").value;
  const model = $("model").value;
  if (model !== "family") { return { emotion, model }; }
  if (emotion === "neutral") { return { emotion }; }
  if (second && second !== emotion) {
    return { blend: { [emotion]: strength, [second]: Number($("second-weight").value) } };
  }
  return strength === 1 ? { emotion } : { emotion, strength };
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  show("error", ""); show("warning", "");
  $("poem").textContent = ""; $("poem").dataset.pieces = 0; $("meta").textContent = "writing…";
  $("write").disabled = true;
  // A first line is a whole line: the model goes on from the next one.
  const line = $("first-line").value.trimEnd();
  const body = { ...modelPart(), prompt: line ? line + "\\n" : "" };
  try {
    // Streamed: the poem appears as it is written, then the final answer replaces it.
    const response = await fetch("/generate?stream=true", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    let pieces = 0;
    const result = await readEvents(response, (event) => {
      if (event.poem === 0) {
        $("poem").textContent += event.text;
        $("poem").dataset.pieces = ++pieces;  // how many pieces it arrived in
      }
    });
    $("poem").textContent = result.poems[0];
    const own = `${result.model} v${result.version}`;
    const who = result.recipe ? result.recipe.formula
      : result.model.endsWith("-conditional") ? `${own} as ${result.emotion}` : own;
    $("meta").textContent = `${who}, seed ${result.seed}`;
    show("warning", result.warning);
  } catch (e) {
    $("meta").textContent = "";
    show("error", e.message);
  } finally {
    $("write").disabled = false;
  }
});

loadEmotions().then(syncDial);
</script>
</body>
</html>
""".replace("__FLUENT_MAX__", f"{FLUENT_MAX_STRENGTH:g}")
