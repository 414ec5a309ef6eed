"""The ASGI app: middleware (request id, size limit, access log, last-resort 500) and handlers."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from micropay.api.errors import ApiError, envelope
from micropay.api.keys import KEY_LIKE
from micropay.api.routes import build_router
from micropay.api.runtime import ApiConfig, Runtime

log = logging.getLogger("micropay.api")
_CARD_LIKE = re.compile(r"(?:\d[ -]?){12,19}")


def redact(text: str) -> str:
    """Remove anything key-like or card-like before it reaches a log."""
    return _CARD_LIKE.sub("[redacted]", KEY_LIKE.sub("[redacted-key]", text))


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class EdgeMiddleware:
    """Request id, body size limit (413), access log without user data, and no stack traces."""

    def __init__(self, app: ASGIApp, body_bytes_max: int) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{secrets.token_hex(8)}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_box = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"request-id", request_id.encode())]
            await send(message)

        body = bytearray()
        too_large = False
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.body_bytes_max):
            too_large = True
        while not too_large:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > self.body_bytes_max:
                too_large = True
            if not message.get("more_body", False):
                break
        try:
            if too_large:
                await _json(
                    413, envelope("body_too_large", "the request body is too large", request_id)
                )(scope, receive, send_with_id)
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            try:
                await self.app(scope, replay, send_with_id)
            except Exception as error:  # last resort: never a stack trace to the client
                log.error("request_failed %s %s", request_id, type(error).__name__)
                if status_box[0] == 0:
                    await _json(500, envelope("internal_error", "internal error", request_id))(
                        scope, receive, send_with_id
                    )
        finally:
            route = scope.get("route")
            log.info(
                "request %s %s %s %d %.1fms",
                request_id,
                scope.get("method", "-"),
                redact(getattr(route, "path", "-")),
                status_box[0],
                (time.perf_counter() - started) * 1000,
            )


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "req_unknown"))


def create_app(config: ApiConfig) -> FastAPI:
    runtime = Runtime(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.worker_threads
        yield
        runtime.close()

    app = FastAPI(
        lifespan=lifespan,
        title="micropay",
        version="1",
        description="Micropayments on an exact double-entry ledger.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.include_router(build_router(runtime))

    @app.exception_handler(ApiError)
    def api_error(request: Request, error: ApiError) -> Response:
        body = envelope(error.code, error.message, _request_id(request))
        return _json(error.status, body, error.headers)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> Response:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _json(
                400, envelope("malformed_json", "the body is not valid JSON", _request_id(request))
            )
        where = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ()))}: {p.get('type', 'invalid')}"
            for p in problems[:10]
        )
        return _json(422, envelope("validation_failed", redact(where), _request_id(request)))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "not_found")
        status = error.status_code if code != "not_found" or error.status_code == 404 else 404
        headers: dict[str, Any] = dict(error.headers or {})
        return _json(status, envelope(code, code.replace("_", " "), _request_id(request)), headers)

    app.add_middleware(EdgeMiddleware, body_bytes_max=config.request_bytes_max)
    return app
