"""GrpcBackend against a real in-process gRPC upstream: retries only on UNAVAILABLE, within the deadline."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from service.gateway.backend import GrpcBackend
from tests.conftest import random_images
from tests.service.gateway.fakes import FakeModelServer, rpc_error, start_fake_upstream
from tests.service.gateway.test_wire import tf_serving_request


async def call_with(fake: FakeModelServer, retries: int, timeout_s: float = 5.0):
    upstream, port, _ = await start_fake_upstream(fake)
    backend = GrpcBackend(
        f"127.0.0.1:{port}", max_message_bytes=64 * 1024 * 1024, retries=retries, retry_backoff_s=0.01
    )
    try:
        return await backend.predict(tf_serving_request(random_images(1)), timeout_s)
    finally:
        await backend.close()
        await upstream.stop(None)


def test_unavailable_is_retried_until_the_upstream_answers():
    fake = FakeModelServer()
    fake.fail_next = [rpc_error(grpc.StatusCode.UNAVAILABLE, "warming up")] * 2
    response = asyncio.run(call_with(fake, retries=2))
    assert response.model_spec.version.value == 2
    assert len(fake.predict_requests) == 3


def test_unavailable_gives_up_after_the_configured_retries():
    fake = FakeModelServer()
    fake.fail_next = [rpc_error(grpc.StatusCode.UNAVAILABLE, "down")] * 5
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(call_with(fake, retries=1))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(fake.predict_requests) == 2


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_other_errors_are_not_retried(code):
    fake = FakeModelServer()
    fake.fail_next = [rpc_error(code, "no")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(call_with(fake, retries=3))
    assert caught.value.code() == code
    assert len(fake.predict_requests) == 1


def test_large_batches_pass_grpcs_default_4_mib_limit():
    big = [random_images(1)[0] + b"\0" * (1024 * 1024)] * 6  # ~6 MiB in one request; PNG ignores trailing bytes

    async def scenario():
        # Like TF Serving, the upstream accepts big messages; the gateway's channel must send them too.
        upstream, port, _ = await start_fake_upstream(FakeModelServer(), max_message_bytes=64 * 1024 * 1024)
        backend = GrpcBackend(f"127.0.0.1:{port}", max_message_bytes=64 * 1024 * 1024)
        try:
            return await backend.predict(tf_serving_request(big), 10)
        finally:
            await backend.close()
            await upstream.stop(None)

    response = asyncio.run(scenario())
    assert response.outputs["classes"].tensor_shape.dim[0].size == 6
