"""How the server answers what goes wrong: one JSON shape, `{"message": ..., "detail"?: ...}`.

422  bad input, its `message` naming the field (`<field>: <problem>`), `detail` as
     FastAPI's validation errors (without the input echoed back)
413  a body over the limit (`BodyLimit`, before or while it is read)
404  no model for the emotion
503  a full queue (with Retry-After), or a registered model the server cannot load
     (the log has the whole message; the client gets it without server paths)
"""

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.batcher import QueueFull
from emoverse.errors import (
    EmoverseError,
    GenerationSettingError,
    IncompatibleModelsError,
    NoModelError,
)
from emoverse.judgements import JudgementRefused

log = logging.getLogger("emoverse.serve")


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


def _finite(value: float) -> Any:
    return value if math.isfinite(value) else str(value)


def add_error_handlers(app: FastAPI) -> None:
    """Every error the server knows, answered in the JSON shape above."""

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

    @app.exception_handler(JudgementRefused)
    async def refused(request: Request, exc: JudgementRefused) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.status == 429 else None
        return JSONResponse(status_code=exc.status, content={"message": str(exc)}, headers=headers)

    @app.exception_handler(NoModelError)
    async def no_model(request: Request, exc: NoModelError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"message": public_message(str(exc))})

    @app.exception_handler(EmoverseError)
    async def unavailable(request: Request, exc: EmoverseError) -> JSONResponse:
        # A registered folder that is gone, damaged or holds pickled weights: the server's
        # problem. Its log has the whole message; the client gets it without paths.
        log.error("%s", exc)
        return JSONResponse(status_code=503, content={"message": public_message(str(exc))})
