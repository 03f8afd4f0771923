"""The gateway's gRPC adapter: TF Serving's PredictionService/ModelService over the same core as HTTP.

`start_grpc_server(core, settings)` serves `tensorflow.serving.PredictionService` (Predict, GetModelMetadata),
`tensorflow.serving.ModelService` (GetModelStatus), `grpc.health.v1.Health` and server reflection; an unmodified
TF Serving client works against it. The client's deadline bounds the upstream call.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service.gateway.core.gateway_core import GatewayCore
from service.gateway.errors import BadRequest, DeadlineExceeded, grpc_abort_on_error
from tlserve.protocol import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

logger = logging.getLogger(__name__)

Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


def observed(route: str) -> Callable[[Method], Method]:
    """Count and time the RPC in tlserve_requests_total / request_duration like the HTTP middleware does."""

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        async def wrapper(self: _Servicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metrics = self.core.metrics
            started = time.perf_counter()
            code = "OK"
            metrics.inflight.inc()
            try:
                return await method(self, request, context)
            except BaseException:
                code = context.code().name if isinstance(context.code(), grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                metrics.inflight.dec()
                metrics.requests.labels(protocol="grpc", route=route, code=code).inc()
                metrics.request_duration.labels(protocol="grpc", route=route).observe(time.perf_counter() - started)

        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class MalformedRequest:
    """What the tolerant deserializer hands the servicer for bytes that are not the expected message."""

    reason: str


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: grpc.aio would answer a parse failure with UNKNOWN."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # protobuf's DecodeError (bad bytes, nesting past its depth limit) and kin
            return MalformedRequest(str(exc) or type(exc).__name__)

    return deserialize


if TYPE_CHECKING:
    GenericHandler: TypeAlias = grpc.GenericRpcHandler[Any, Any]
else:  # the runtime class is not subscriptable
    GenericHandler = grpc.GenericRpcHandler


class _TolerantHandlers(GenericHandler):
    """Wraps a generated service's handlers so that malformed request bytes reach the servicer (→ 400)."""

    def __init__(self, inner: GenericHandler) -> None:
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler: Any = self._inner.service(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer))


@dataclass
class _TolerantServer:
    """What the generated `add_*Servicer_to_server` functions see instead of the server."""

    server: grpc.aio.Server

    def add_generic_rpc_handlers(self, handlers: tuple[GenericHandler, ...]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_TolerantHandlers(handler) for handler in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Newer generated stubs also register each method directly; that would bypass the tolerant generic
        handlers above, which already serve every method, so it is left out."""


def parsed(request: Any) -> Any:
    """The request message, or INVALID_ARGUMENT when its bytes did not parse."""
    if isinstance(request, MalformedRequest):
        raise BadRequest(f"the request is not a valid protocol buffer: {request.reason}")
    return request


@dataclass
class _Servicer:
    core: GatewayCore

    def admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        """Check the API key; return the seconds the upstream call may take (the client's deadline bounds it)."""
        metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())}
        api_key = metadata.get("x-api-key")
        authorization = metadata.get("authorization")
        if not api_key and isinstance(authorization, str) and authorization.lower().startswith("bearer "):
            api_key = authorization[7:].strip()
        self.core.authenticate(api_key if isinstance(api_key, str) else None)
        timeout_s = self.core.settings.request_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded("the client's deadline has passed")
            timeout_s = min(timeout_s, remaining)
        return timeout_s


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict and GetModelMetadata, validated and proxied to the model server."""

    @observed("Predict")
    @grpc_abort_on_error
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: N802
        timeout_s = self.admit(context)
        return await self.core.predict(parsed(request), timeout_s)

    @observed("GetModelMetadata")
    @grpc_abort_on_error
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: N802
        timeout_s = self.admit(context)
        return await self.core.model_metadata(parsed(request), timeout_s)


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """GetModelStatus, proxied; reloading the config is the model server's business, not the gateway's."""

    @observed("GetModelStatus")
    @grpc_abort_on_error
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: N802
        timeout_s = self.admit(context)
        return await self.core.model_status(parsed(request), timeout_s)


@dataclass
class GrpcGateway:
    """A started gRPC server, its bound port and its health servicer (for graceful shutdown)."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, stop accepting, let in-flight RPCs finish within grace_s."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc_server(core: GatewayCore, host: str, port: int) -> GrpcGateway:
    """Bind host:port (0 = a free port) and start serving."""
    settings = core.settings
    # Requests are capped like HTTP bodies (else RESOURCE_EXHAUSTED); answers may be as large as upstream's.
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", settings.upstream_max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    # Malformed request bytes must be INVALID_ARGUMENT, never grpc.aio's UNKNOWN: see _TolerantHandlers.
    tolerant = _TolerantServer(server)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core), tolerant)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), tolerant)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = (PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(service_names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", PREDICTION_SERVICE, MODEL_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("gRPC gateway listening on %s:%d", host, bound)
    return GrpcGateway(server, bound, health_servicer)
