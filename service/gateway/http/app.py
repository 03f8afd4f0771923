"""The gateway's HTTP adapter: `create_app(settings, backend) -> FastAPI`, or `create_app(settings, core=core)`.

`service.gateway.server` builds one `GatewayCore` and hands it to this adapter and to the gRPC one; tests pass just
a `backend` (a fake) and get a core of their own. Routes live in `predict` (/predict) and `tfserving`
(/v1/models/...); this module adds /healthz, /readyz, /metrics, error handling, the body-size limit and request
metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.gateway.core import served_models
from service.gateway.core.gateway_core import GatewayCore
from service.gateway.core.metrics import CONTENT_TYPE, GatewayMetrics
from service.gateway.errors import GatewayError, PayloadTooLarge, ValidationFailed, log_if_server_error
from service.gateway.http import docs, page, predict, tfserving
from service.gateway.http.auth import KeyShown, MetricsReader
from service.gateway.http.json_offload import BodyConverter
from service.gateway.http.predict import ERROR_SCHEMA, describe_validation_errors
from service.gateway.http.protocol import DrainingMiddleware
from service.gateway.settings import Settings
from service.gateway.upstream.backend import Backend

logger = logging.getLogger(__name__)

TFSERVING_PREFIX = "/v1/"
CLIENT_CLOSED_REQUEST = 499  # nginx's code: recorded in metrics, never sent
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def create_app(
    settings: Settings,
    backend: Backend | None = None,
    *,
    core: GatewayCore | None = None,
    rng: random.Random | None = None,
) -> FastAPI:
    """The HTTP gateway over the server's shared `core` (its owner closes it), or over its own core on `backend`."""
    if (core is None) == (backend is None):
        raise TypeError("create_app needs exactly one of backend= or core=")
    own_core = core is None
    if core is None:
        assert backend is not None
        core = GatewayCore(settings, backend, GatewayMetrics(), rng or random.Random())
    metrics = core.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.body_converter.close()
            if own_core:
                await app.state.core.close()

    app = FastAPI(
        title="tlserve gateway",
        summary="Image classification over HTTP: /predict and TF Serving's REST API.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # http.docs serves /docs with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.core = core
    app.state.metrics = metrics
    app.state.signature_cache = {}  # target → (fetched at, input dtypes per signature), see http.tfserving
    app.state.body_converter = BodyConverter(settings.json_offload_workers, settings.json_offload_min_body_bytes)
    app.include_router(predict.router)
    app.include_router(tfserving.router)
    app.include_router(page.router)
    _add_operational_routes(app)
    docs.add_docs(app)
    _add_error_handlers(app)
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.state.draining = asyncio.Event()  # set by the server when it stops: answers then say Connection: close
    app.add_middleware(DrainingMiddleware, draining=app.state.draining)
    return app


_JSON_ONLY: dict[int | str, dict[str, Any]] = {}
TEXT = {"type": "string"}
READINESS_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "models": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "each served model → AVAILABLE, or why it is not",
        },
        "not_ready": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"},
    },
    "required": ["status"],
}


def core_of(request: Request) -> GatewayCore:
    core: GatewayCore = request.app.state.core
    return core


def _add_operational_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"], summary="The process is alive", responses=_JSON_ONLY)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Every model the upstream is configured to serve has an AVAILABLE version (else 503)",
        description="The body maps each served model to `AVAILABLE` or why not; `not_ready` lists the others. "
        "The served models come from --served-models, else the model repository (--repository; `tlserve serve` "
        "sets it for the embedded model server), else --default-model. With API keys configured, a request "
        "without a valid key gets the status code and `status` only: probes need no key, model names do.",
        responses={
            200: {"description": "ready", "content": {"application/json": {"schema": READINESS_SCHEMA}}},
            503: {
                "description": "some served model has no AVAILABLE version, or none is known",
                "content": {"application/json": {"schema": READINESS_SCHEMA}},
            },
        },
    )
    async def readyz(request: Request, key_shown: KeyShown) -> JSONResponse:
        models = await core_of(request).readiness()
        not_ready = sorted(name for name, state in models.items() if state != "AVAILABLE")
        body: dict[str, object] = {"status": "ready", "models": models, "not_ready": not_ready}
        if not models:
            body |= {"status": "not ready", "reason": readiness_unknown_reason(request.app.state.settings)}
        elif not_ready:
            body["status"] = "not ready"
            body["reason"] = "no AVAILABLE version: " + ", ".join(f"{name} ({models[name]})" for name in not_ready)
        status_code = 200 if body["status"] == "ready" else 503
        if not key_shown:
            body = {"status": body["status"]}  # which models serve is for callers with a key
        return JSONResponse(body, status_code=status_code)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (tlserve_*)",
        description="With API keys configured, a key is required (they name the served models, versions and "
        "labels) unless the gateway runs with --public-metrics.",
        response_class=Response,
        responses={
            200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
            401: {
                "description": "API keys are configured and the request shows none of them",
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            },
        },
    )
    async def metrics(request: Request, _reader: MetricsReader) -> Response:
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


def readiness_unknown_reason(settings: Settings) -> str:
    if served_models.served_models(settings) is None:
        return served_models.UNKNOWN_MODELS
    return "no model is served yet (train one with `tlserve train DATA --name NAME`)"


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    """tlserve's `{"error": {"code", "message"}}`; TF Serving's `{"error": "..."}` on its own /v1 routes."""
    if request.url.path.startswith(TFSERVING_PREFIX):
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, error: GatewayError) -> JSONResponse:
        log_if_server_error(error)
        return error_response(request, error.http_status, error.code, error.public_message)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, ValidationFailed.code, describe_validation_errors(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(error.status_code, "http_error")
        return error_response(request, error.status_code, code, str(error.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal", "internal error")


class BodyLimitMiddleware:
    """413 for bodies over max_body_bytes: at once from Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            request = Request(scope)
            error = PayloadTooLarge(f"body of {int(declared)} bytes exceeds the limit of {self.max_body_bytes}")
            response = error_response(request, error.http_status, error.code, error.message)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise PayloadTooLarge(f"body exceeds the limit of {self.max_body_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


class CancelOnDisconnectMiddleware:
    """Cancel a request whose client has gone away, so it is not sent upstream (or is dropped from its batch).

    Once the body has been read, the next ASGI message can only be `http.disconnect`; a watcher waits for it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        disconnected = False

        async def tracking_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        handler = asyncio.ensure_future(self.app(scope, tracking_receive, send))

        async def watch() -> None:
            nonlocal disconnected
            await body_read.wait()
            if (await receive())["type"] == "http.disconnect" and not handler.done():
                disconnected = True
                handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected:
                raise
            logger.info("client went away: %s %s cancelled", scope["method"], scope["path"])
        finally:
            watcher.cancel()


class RequestMetricsMiddleware:
    """tlserve_requests_total / request_duration / inflight for every HTTP request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = CLIENT_CLOSED_REQUEST  # unless a response starts (or the app raises: 500)

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.inflight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(protocol="http", route=route, code=str(status)).inc()
            self.metrics.request_duration.labels(protocol="http", route=route).observe(time.perf_counter() - started)
