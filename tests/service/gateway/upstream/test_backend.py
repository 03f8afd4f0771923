"""GrpcBackend against a real in-process gRPC upstream: retries only on UNAVAILABLE, within the deadline."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from service.gateway.upstream.backend import GrpcBackend
from tests.conftest import random_images
from tests.service.gateway.fakes import FakeModelServer, rpc_error, start_fake_upstream
from tests.service.gateway.in_process import tf_serving_request


async def call_with(fake: FakeModelServer, retries: int, timeout_s: float = 30.0):
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


MIB = 1024 * 1024


class EchoingFake(FakeModelServer):
    """Answers with its input images copied into an extra output, so a big request gets an equally big answer."""

    async def predict(self, request, timeout_s: float):
        response = await super().predict(request, timeout_s)
        response.outputs["echo"].CopyFrom(request.inputs["image_bytes"])
        return response


def big_images() -> list[bytes]:
    return [random_images(1)[0] + b"\0" * MIB] * 6  # ~6 MiB in one message; PNG ignores trailing bytes


def test_large_batches_pass_grpcs_default_4_mib_limit_both_ways():
    # gRPC's default limit is 4 MiB on RECEIVE (sending is unlimited): the channel must raise it for answers.
    async def scenario():
        # Like TF Serving, the upstream accepts big messages; the gateway's channel must send and receive them.
        upstream, port, _ = await start_fake_upstream(EchoingFake(), max_message_bytes=64 * MIB)
        backend = GrpcBackend(f"127.0.0.1:{port}", max_message_bytes=64 * MIB)
        try:
            return await backend.predict(tf_serving_request(big_images()), 30)
        finally:
            await backend.close()
            await upstream.stop(None)

    response = asyncio.run(scenario())
    assert response.ByteSize() > 6 * MIB
    assert response.outputs["classes"].tensor_shape.dim[0].size == 6


def test_the_gateways_grpc_server_takes_and_returns_messages_over_4_mib():
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tests.service.gateway.in_process import running_gateway

    async def scenario():
        upstream, port, _ = await start_fake_upstream(EchoingFake(), max_message_bytes=64 * MIB)
        client_options = [("grpc.max_receive_message_length", 64 * MIB)]
        try:
            async with (
                running_gateway(port, request_timeout_s=60) as ports,
                grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc_port}", options=client_options) as channel,
            ):
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                return await stub.Predict(tf_serving_request(big_images()), timeout=30)
        finally:
            await upstream.stop(None)

    response = asyncio.run(scenario())
    assert response.ByteSize() > 6 * MIB
    assert response.outputs["classes"].tensor_shape.dim[0].size == 6
