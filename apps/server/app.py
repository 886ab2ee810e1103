"""`create_app`: the FastAPI app over one data dir's registry, its routes by concern.

    apps/server/page.py        GET /, GET /judge, /static/*
    apps/server/catalog.py     GET /emotions, GET /models
    apps/server/generation.py  POST /generate (JSON or server-sent events)
    apps/server/judging.py     GET /judge/poem, POST /judgements
    apps/server/scoring.py     POST /judge: the three judges over poems a user gives
    apps/server/errors.py      the error answers, and the body size limit

The routes find their shared state on `app.state`: `models` (apps/server/cache.py's
`ModelCache`), `judgements` (the store of readers' guesses) and `judging` (poems handed out).
"""

import functools
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from apps.batcher import BatchSettings
from apps.server import catalog, generation, judging, page, scoring
from apps.server.cache import DEFAULT_CACHE_SIZE, DEFAULT_REGISTRY_TTL_S, ModelCache
from apps.server.errors import BodyLimit, add_error_handlers
from emoverse import settings
from emoverse.judgements import JudgementStore, ReaderRules
from emoverse.paths import RunPaths
from models.registry.model_registry import ModelRegistry


def create_app(
    data_dir: Path,
    *,
    cache_size: int = DEFAULT_CACHE_SIZE,
    registry_ttl_s: float = DEFAULT_REGISTRY_TTL_S,
    batching: BatchSettings | None = None,
    max_body_bytes: int | None = None,
    trusted_hosts: list[str] | None = None,
    reader_rules: ReaderRules | None = None,
) -> FastAPI:
    """The app over the registry of `data_dir` (or `MLFLOW_TRACKING_URI`). Bodies over
        `max_body_bytes` (default: the setting) are a 413; with `trusted_hosts`, a request naming
        another Host is a 400. `reader_rules`: how much one reader's answers may weigh (default
    `ReaderRules()`)."""
    paths = RunPaths(data_dir)
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)
    app = FastAPI(title="emoverse", summary="Emotion-conditioned poetry from the model registry")
    app.state.models = ModelCache(
        registry, cache_size, registry_ttl_s, batching, blends_dir=paths.blends
    )
    app.state.judgements = JudgementStore(paths.judgements_db)
    app.state.judging = judging.Judging(
        app.state.judgements,
        functools.cache(lambda: ModelRegistry.for_data_dir(data_dir)),
        reader_rules or ReaderRules(),
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes or settings.max_body_bytes())
    if trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)
    add_error_handlers(app)
    for routes in (page, catalog, generation, judging, scoring):
        app.include_router(routes.router)
    app.mount("/static", page.static_files(), name="static")
    return app
