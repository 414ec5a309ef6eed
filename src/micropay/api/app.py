"""The ASGI app: middleware (request id, size limit, access log, last-resort 500) and handlers."""

from __future__ import annotations

import contextlib
import logging
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
from micropay.api.observability import (
    Metrics,
    MetricsRuntime,
    operator_only,
    redact,
    request_id_var,
)
from micropay.api.routes import build_router
from micropay.api.routes_extra import build_extra_router
from micropay.api.runtime import ApiConfig

log = logging.getLogger("micropay.api")
_PURCHASES = ("POST", "/v1/purchases")
_ANSWER_BYTES_MAX = 16 * 1024
__all__ = ["create_app", "redact"]


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class EdgeMiddleware:
    """Request id, body size limit (413), access log without user data, metrics, no stack traces."""

    def __init__(self, app: ASGIApp, body_bytes_max: int, metrics: Metrics) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{secrets.token_hex(8)}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_box = [0]
        answer = bytearray()  # a purchase's answer, counted by outcome
        replayed_box = [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message.setdefault("headers", [])
                replayed_box[0] = (b"idempotent-replayed", b"true") in [
                    (k.lower(), v) for k, v in message["headers"]
                ]
                message["headers"] = [*message["headers"], (b"request-id", request_id.encode())]
            elif (
                message["type"] == "http.response.body"
                and _route(scope) == _PURCHASES
                and len(answer) < _ANSWER_BYTES_MAX
            ):
                answer.extend(message.get("body", b""))
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
        context = request_id_var.set(request_id)  # log lines of this request carry its id
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
            seconds = time.perf_counter() - started
            method, route = _route(scope)
            self.metrics.observe_request(method, route, status_box[0], seconds)
            if (method, route) == _PURCHASES and answer and not replayed_box[0]:
                self.metrics.observe_purchase_answer(status_box[0], bytes(answer))
            log.info(
                "request %s %s %s %d %.1fms",
                request_id,
                method,
                route,
                status_box[0],
                seconds * 1000,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status_box[0],
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
            request_id_var.reset(context)


def _route(scope: Scope) -> tuple[str, str]:
    """(method, route template): never the raw path, which may hold ids or keys."""
    route = scope.get("route")
    return str(scope.get("method", "-")), redact(str(getattr(route, "path", "unmatched")))


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "req_unknown"))


def create_app(config: ApiConfig) -> FastAPI:
    metrics = Metrics()
    runtime = MetricsRuntime(config, metrics)

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
    app.state.metrics = metrics
    app.include_router(build_router(runtime))

    @app.get("/metrics", include_in_schema=False)
    def metrics_text(request: Request) -> Response:
        """Prometheus metrics; needs the operator key (volumes are not public)."""
        operator_only(runtime, request.headers.get("authorization"))
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.include_router(build_extra_router(runtime))

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

    app.add_middleware(EdgeMiddleware, body_bytes_max=config.request_bytes_max, metrics=metrics)
    return app
