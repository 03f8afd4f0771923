"""The whole gateway (`serve`: uvicorn + grpc.aio) in this event loop on free ports, for the wire tests.

async with fake_and_gateway() as (ports, channel, fake, servicer):   # fake gRPC upstream + gateway
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import grpc.aio
import httpx
from tensorflow_serving.apis import predict_pb2

from service.gateway.core.tensors import string_tensor
from service.gateway.server import GatewayPorts, serve
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import FakeModelServer, start_fake_upstream


def running_gateway(upstream_port: int, **overrides):
    """The full gateway (HTTP + gRPC) on free ports, pointed at 127.0.0.1:upstream_port."""
    return running_gateway_to(f"127.0.0.1:{upstream_port}", **overrides)


@contextlib.asynccontextmanager
async def running_gateway_to(upstream: str, **overrides):
    """The full gateway (HTTP + gRPC) on free ports, pointed at the gRPC target `upstream`."""
    settings = make_settings(upstream=upstream, http_host="127.0.0.1", **overrides)
    stop = asyncio.Event()
    ready: asyncio.Future[GatewayPorts] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop=stop, on_ready=ready.set_result))
    done, _ = await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        await task
    ports = ready.result()
    try:
        yield ports
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def fake_and_gateway(fake: FakeModelServer | None = None, **overrides):
    fake = fake or FakeModelServer()
    upstream, upstream_port, servicer = await start_fake_upstream(fake)
    try:
        async with running_gateway(upstream_port, **overrides) as ports, grpc_channel(ports.grpc_port) as channel:
            yield ports, channel, fake, servicer
    finally:
        await upstream.stop(None)


def grpc_channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def http_client(ports: GatewayPorts) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http_port}", timeout=30)


def tf_serving_request(images: list[bytes], model: str = "demo") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(string_tensor(images))
    return request
