"""The upstream model server as seen by the gateway: a `Backend` protocol and its TF Serving gRPC implementation.

`GrpcBackend` keeps ONE grpc.aio channel for the gateway's lifetime, puts a deadline on every call, raises gRPC's
4 MiB message limit (batches of images exceed it) and retries with backoff only on UNAVAILABLE. The channel's load
balancing policy decides how calls spread over the target's addresses (several TF Serving replicas):
`pick_first` sends everything to one, `round_robin` keeps a connection to each and takes turns.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc
import grpc.aio

if TYPE_CHECKING:
    from service.gateway.settings import Settings

logger = logging.getLogger(__name__)

# tensorflow_serving ships no type information; these aliases name what travels through the protocol.
PredictRequest: TypeAlias = Any
PredictResponse: TypeAlias = Any
MetadataRequest: TypeAlias = Any
MetadataResponse: TypeAlias = Any
StatusRequest: TypeAlias = Any
StatusResponse: TypeAlias = Any


class Backend(Protocol):
    """What the gateway needs from a model server; `timeout_s` is the time left of the caller's deadline."""

    async def predict(self, request: PredictRequest, timeout_s: float) -> PredictResponse: ...

    async def get_model_metadata(self, request: MetadataRequest, timeout_s: float) -> MetadataResponse: ...

    async def get_model_status(self, request: StatusRequest, timeout_s: float) -> StatusResponse: ...

    async def close(self) -> None: ...


class GrpcBackend:
    """TF Serving's PredictionService/ModelService over one reused grpc.aio channel."""

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int,
        retries: int = 2,
        retry_backoff_s: float = 0.05,
        lb_policy: str = "pick_first",
        is_available: Callable[[], bool] | None = None,
    ) -> None:
        from tlserve.protocol import model_service_pb2_grpc, prediction_service_pb2_grpc

        options = [
            # The load balancing policy as the channel's default service config; a DNS TXT record may not replace it.
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{lb_policy: {}}]})),
            ("grpc.service_config_disable_resolution", 1),
            # gRPC re-resolves a dns:/// target only when a connection is lost, and by default not within 30 s of
            # the last time: a TF Serving pod replaced by a rollout would leave the gateway on stale addresses.
            ("grpc.dns_min_time_between_resolutions_ms", 1000),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # Reconnect quickly after the model server restarts instead of gRPC's default 20 s+ backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.enable_retries", 0),
        ]
        self.target = target
        self._channel = grpc.aio.insecure_channel(target, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._retries = retries
        self._retry_backoff_s = retry_backoff_s
        # False while a supervisor knows the server is down: no point retrying then (see service.gateway.supervisor).
        self._is_available = is_available or (lambda: True)

    @classmethod
    def from_settings(cls, settings: Settings, *, is_available: Callable[[], bool] | None = None) -> GrpcBackend:
        """The backend the gateway's upstream_* settings describe."""
        return cls(
            settings.upstream,
            max_message_bytes=settings.upstream_max_message_bytes,
            retries=settings.upstream_retries,
            retry_backoff_s=settings.upstream_retry_backoff_s,
            lb_policy=settings.upstream_lb_policy,
            is_available=is_available,
        )

    async def predict(self, request: PredictRequest, timeout_s: float) -> PredictResponse:
        return await self._call(self._predictions.Predict, request, timeout_s)

    async def get_model_metadata(self, request: MetadataRequest, timeout_s: float) -> MetadataResponse:
        return await self._call(self._predictions.GetModelMetadata, request, timeout_s)

    async def get_model_status(self, request: StatusRequest, timeout_s: float) -> StatusResponse:
        return await self._call(self._models.GetModelStatus, request, timeout_s)

    async def close(self) -> None:
        await self._channel.close(None)

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any, timeout_s: float) -> Any:
        """One RPC within `timeout_s` in total, retried with doubling backoff while the server is UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        backoff_s = self._retry_backoff_s
        for attempt in range(self._retries + 1):
            try:
                return await method(request, timeout=max(deadline - loop.time(), 0.001))
            except grpc.aio.AioRpcError as exc:
                retryable = exc.code() == grpc.StatusCode.UNAVAILABLE and attempt < self._retries
                if not retryable or loop.time() + backoff_s >= deadline or not self._is_available():
                    raise
                logger.info(
                    "upstream %s unavailable (attempt %d), retrying in %.3fs", self.target, attempt + 1, backoff_s
                )
                await asyncio.sleep(backoff_s)
                if not self._is_available():
                    raise  # the server is known to be down: answer now instead of after every retry
                backoff_s *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")
