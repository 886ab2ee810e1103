"""`emoverse serve`: the registry's models over HTTP (FastAPI on uvicorn), and two small pages.

    GET  /           a page: choose an emotion, type a first line, read the poem
    GET  /emotions   the nine labels
    GET  /models     the model each emotion uses now (champion, or newest with a warning)
    POST /generate   poems from an emotion's model, a dialled one or a blend; `?stream=true`
                     for server-sent events as they are written
    GET  /judge, GET /judge/poem, POST /judgements   blind human judging

Where each part lives:

    app.py         create_app: the app, its middleware and routers
    page.py        the pages, served from static/ (index.html, app.js, style.css, judge.*)
    catalog.py     /emotions and /models
    generation.py  POST /generate: the body, the batcher's job, JSON or server-sent events
    judging.py     /judge/poem and /judgements
    cache.py       ModelCache: which version is current (short TTL), the loaded models (LRU)
    errors.py      one JSON shape for every error; the body size limit
    running.py     serve (uvicorn until interrupted), running_app (a background thread)

Generation requests are checked by apps/requests.py, as the CLI's are. Bad input gets a 422
whose `message` names the field.
"""

from apps.server.app import create_app
from apps.server.cache import ModelCache
from apps.server.generation import SERVER_MAX_N
from apps.server.running import is_loopback, running_app, serve, server_config

__all__ = [
    "SERVER_MAX_N",
    "ModelCache",
    "create_app",
    "is_loopback",
    "running_app",
    "serve",
    "server_config",
]
