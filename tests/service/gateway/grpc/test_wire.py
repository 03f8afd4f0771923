"""The real wire code: gateway server (uvicorn + grpc.aio) → GrpcBackend → an in-process gRPC upstream.

The gateway's gRPC side is called with the tensorflow_serving stubs exactly as a TF Serving client would.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow.core.framework import types_pb2
from tensorflow.core.framework.tensor_shape_pb2 import TensorShapeProto
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.gateway.core.batching import MicroBatcher
from service.gateway.core.tensors import to_array
from service.gateway.server import GatewayPorts, serve
from tests.conftest import random_images
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import FakeModelServer, GatedModelServer, image_label, start_fake_upstream
from tests.service.gateway.in_process import (
    fake_and_gateway,
    http_client,
    running_gateway,
    tf_serving_request,
)


def test_tf_serving_grpc_client_predicts_through_the_gateway():
    async def scenario():
        async with fake_and_gateway() as (_, channel, _fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            images = random_images(2)
            response = await stub.Predict(tf_serving_request(images), timeout=10)
            assert response.model_spec.version.value == 2
            classes = to_array(response.outputs["classes"])
            assert [row[0].decode() for row in classes] == [image_label(image) for image in images]
            assert to_array(response.outputs["probabilities"]).shape == (2, 3)

    asyncio.run(scenario())


def test_grpc_metadata_and_status_are_proxied():
    async def scenario():
        async with fake_and_gateway() as (_, channel, _fake, _servicer):
            metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            metadata_request.model_spec.name = "demo"
            metadata = await prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
                metadata_request, timeout=10
            )
            assert metadata.model_spec.version.value == 2
            signatures = get_model_metadata_pb2.SignatureDefMap()
            metadata.metadata["signature_def"].Unpack(signatures)
            assert "image_bytes" in signatures.signature_def["serving_default"].inputs
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "demo"
            status = await model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=10)
            assert [item.version for item in status.model_version_status] == [1, 2]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("images", "model", "code", "message"),
    [
        ([b"not an image"], "demo", grpc.StatusCode.INVALID_ARGUMENT, "image 0"),
        ([b"BM" + b"\0" * 10], "demo", grpc.StatusCode.INVALID_ARGUMENT, "image 0"),
        (None, "nope", grpc.StatusCode.NOT_FOUND, "nope"),
        (None, "", grpc.StatusCode.INVALID_ARGUMENT, "several models are served (a, b)"),
    ],
)
def test_grpc_bad_requests_get_their_status_code(images, model, code, message):
    async def scenario():
        async with fake_and_gateway(default_model=None, served_models="a,b") as (_, channel, _fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(tf_serving_request(images or random_images(1), model), timeout=10)
            assert caught.value.code() == code
            assert message in caught.value.details()

    asyncio.run(scenario())


def test_grpc_request_without_a_model_name_gets_the_default_model_like_http():
    async def scenario():
        async with fake_and_gateway(default_model=None, served_models="demo") as (_, channel, _fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = await stub.Predict(tf_serving_request(random_images(1), ""), timeout=10)
            assert response.model_spec.name == "demo"

    asyncio.run(scenario())


def _pixels_with_dims(*sizes: int, content: bytes = b"") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.model_spec.signature_name = "predict_pixels"
    request.inputs["pixels"].dtype = types_pb2.DT_UINT8
    request.inputs["pixels"].tensor_shape.dim.extend(TensorShapeProto.Dim(size=size) for size in sizes)
    request.inputs["pixels"].tensor_content = content
    return request


def _bytes_with_rows(rows: int) -> predict_pb2.PredictRequest:
    request = tf_serving_request(random_images(1))
    request.inputs["image_bytes"].tensor_shape.dim[0].size = rows
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_bytes_with_rows(-7), "invalid shape [-7]"),
        (_bytes_with_rows(3), "carries 1"),
        (_pixels_with_dims(-1, 32, 32, 3), "invalid shape"),
        (_pixels_with_dims(2, 2, 2, 3, content=b"\0" * 5), "but 5 bytes of content"),
    ],
)
def test_grpc_predict_with_negative_or_inconsistent_dims_is_invalid_argument(request_, message):
    async def scenario():
        async with fake_and_gateway() as (_, channel, fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(request_, timeout=10)
            return caught.value, fake

    error, fake = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert fake.predict_requests == []


def _deeply_nested_predict_request(depth: int = 200) -> bytes:
    """PredictRequest bytes whose input nests TensorProto.variant_val past protobuf's parse depth limit."""
    from google.protobuf.internal.encoder import _VarintBytes

    def field(tag: bytes, payload: bytes) -> bytes:
        return tag + _VarintBytes(len(payload)) + payload

    tensor = b""
    for _ in range(depth):  # TensorProto{dtype: DT_VARIANT, variant_val: [{type_name: "x", tensors: [tensor]}]}
        tensor = b"\x08\x15" + field(b"\x7a", field(b"\x0a", b"x") + field(b"\x1a", tensor))
    return field(b"\x0a", field(b"\x0a", b"demo")) + field(b"\x12", field(b"\x0a", b"a") + field(b"\x12", tensor))


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("/tensorflow.serving.PredictionService/Predict", b"\xff\xff\xff"),
        ("/tensorflow.serving.PredictionService/Predict", _deeply_nested_predict_request()),
        ("/tensorflow.serving.PredictionService/GetModelMetadata", b"\xff\xff\xff"),
        ("/tensorflow.serving.ModelService/GetModelStatus", b"\xff\xff\xff"),
    ],
)
def test_grpc_request_bytes_that_do_not_parse_are_invalid_argument(method, raw):
    async def scenario():
        async with fake_and_gateway() as (_, channel, fake, _servicer):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method)(raw, timeout=10)
            return caught.value, fake

    error, fake = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protocol buffer" in error.details()
    assert fake.predict_requests == []


def test_grpc_requires_the_api_key_when_configured():
    async def scenario():
        async with fake_and_gateway(api_keys=("k1",)) as (_, channel, _fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = tf_serving_request(random_images(1))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            response = await stub.Predict(request, timeout=10, metadata=(("x-api-key", "k1"),))
            assert response.model_spec.name == "demo"

    asyncio.run(scenario())


def test_without_a_key_grpc_neither_reads_nor_changes_what_serves():
    """Every method that reads what serves is UNAUTHENTICATED; reloading is not offered at all (UNIMPLEMENTED, with
    or without a key); health and reflection answer without one but name no model."""

    async def scenario():
        async with fake_and_gateway(api_keys=("k1",)) as (_, channel, fake, _servicer):
            prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            metadata_request.model_spec.name = "demo"
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "demo"
            codes = {}
            for name, call in {
                "Predict": lambda: prediction.Predict(tf_serving_request(random_images(1)), timeout=10),
                "GetModelMetadata": lambda: prediction.GetModelMetadata(metadata_request, timeout=10),
                "GetModelStatus": lambda: models.GetModelStatus(status_request, timeout=10),
                "HandleReloadConfigRequest": lambda: models.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(), timeout=10
                ),
            }.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call()
                codes[name] = caught.value.code()
            with pytest.raises(grpc.aio.AioRpcError) as keyed_reload:
                await models.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(), timeout=10, metadata=(("x-api-key", "k1"),)
                )
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return codes, keyed_reload.value.code(), health, fake

    codes, keyed_reload, health, fake = asyncio.run(scenario())
    assert codes == {
        "Predict": grpc.StatusCode.UNAUTHENTICATED,
        "GetModelMetadata": grpc.StatusCode.UNAUTHENTICATED,
        "GetModelStatus": grpc.StatusCode.UNAUTHENTICATED,
        "HandleReloadConfigRequest": grpc.StatusCode.UNIMPLEMENTED,
    }
    assert keyed_reload == grpc.StatusCode.UNIMPLEMENTED
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "demo" not in str(health)
    assert fake.predict_requests == []


def test_client_deadline_bounds_the_upstream_call():
    async def scenario():
        fake = FakeModelServer()
        async with fake_and_gateway(fake, request_timeout_s=60.0) as (_, channel, _fake, servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            # Warm up with a generous deadline: connections, the `stable` label probe. Only then is the next call's
            # deadline all about the upstream call.
            await stub.Predict(tf_serving_request(random_images(1)), timeout=30)
            fake.delay_s = 60.0  # the upstream never answers in time; its handler is cancelled at the deadline
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(tf_serving_request(random_images(1)), timeout=2.0)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(servicer.deadlines) == 2, f"upstream Predict calls: {servicer.deadlines}"
            # The gateway passed the client's remaining time on (2 s, plus gRPC's rounding up on the wire), not
            # its own 60 s.
            assert servicer.deadlines[1] is not None
            assert servicer.deadlines[1] < 10.0

    asyncio.run(scenario())


def test_health_and_reflection_answer():
    async def scenario():
        async with fake_and_gateway() as (_, channel, _fake, _servicer):
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {service.name async for answer in responses for service in answer.list_services_response.service}
            assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= names
            assert "grpc.health.v1.Health" in names

    asyncio.run(scenario())


def test_http_over_real_sockets_and_grpc_share_one_set_of_metrics():
    async def scenario():
        async with fake_and_gateway() as (ports, channel, _fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            await stub.Predict(tf_serving_request(random_images(1)), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Predict(tf_serving_request(random_images(1), model="nope"), timeout=10)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http_port}") as client:
                image = random_images(1)[0]
                response = await client.post("/predict", files=[("files", ("a.png", image, "image/png"))])
                assert response.json()["predictions"][0]["label"] == image_label(image)
                metrics = (await client.get("/metrics")).text
            assert 'tlserve_requests_total{code="OK",protocol="grpc",route="Predict"} 1.0' in metrics
            assert 'tlserve_requests_total{code="NOT_FOUND",protocol="grpc",route="Predict"} 1.0' in metrics
            assert 'tlserve_requests_total{code="200",protocol="http",route="/predict"} 1.0' in metrics

    asyncio.run(scenario())


def test_upstream_down_is_503_and_the_gateway_recovers_when_it_returns():
    async def scenario():
        fake = FakeModelServer()
        upstream, port, _ = await start_fake_upstream(fake)
        async with running_gateway(port, request_timeout_s=2.0) as ports, http_client(ports) as client:
            files = [("files", ("a.png", random_images(1)[0], "image/png"))]
            assert (await client.post("/predict", files=files)).status_code == 200
            await upstream.stop(None)
            down = await client.post("/predict", files=files)
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "backend_unavailable"
            assert (await client.get("/readyz")).status_code == 503
            upstream, _, _ = await start_fake_upstream(fake, port)
            deadline = asyncio.get_running_loop().time() + 30
            # The channel reconnects on its own (backoff capped at 1 s).
            while (await client.post("/predict", files=files)).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "the gateway did not recover after 30 s"
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
        await upstream.stop(None)

    asyncio.run(scenario())


def test_stop_finishes_in_flight_requests_then_refuses_new_ones():
    async def scenario():
        fake = GatedModelServer()
        upstream, port, _ = await start_fake_upstream(fake)
        settings = make_settings(upstream=f"127.0.0.1:{port}", http_host="127.0.0.1", request_timeout_s=60)
        stop = asyncio.Event()
        ready: asyncio.Future[GatewayPorts] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve(settings, stop=stop, on_ready=ready.set_result))
        ports = await asyncio.wait_for(ready, 30)
        async with http_client(ports) as client:
            files = [("files", ("a.png", random_images(1)[0], "image/png"))]
            in_flight = asyncio.create_task(client.post("/predict", files=files))
            await asyncio.wait_for(fake.arrived.wait(), 30)  # the request is in flight, held by the upstream
            stop.set()
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # until the stopping gateway refuses new connections
                try:
                    async with http_client(ports) as other:
                        await other.get("/healthz")
                except httpx.ConnectError:
                    break
                except httpx.TransportError:
                    pass  # accepted just before the listener closed, then dropped by the shutdown: try again
                assert asyncio.get_running_loop().time() < deadline, "the gateway still accepts after stop"
                await asyncio.sleep(0.05)
            assert not in_flight.done()
            fake.release.set()
            assert (await in_flight).status_code == 200
        await asyncio.wait_for(server, 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http_port}") as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/healthz")
        await upstream.stop(None)

    asyncio.run(scenario())


def test_http_request_whose_client_went_away_is_not_sent_upstream(monkeypatch):
    queued = asyncio.Event()
    submit = MicroBatcher.submit

    async def signalling_submit(self, key, images, timeout_s):
        queued.set()  # `submit` queues the images before its first await
        return await submit(self, key, images, timeout_s)

    monkeypatch.setattr(MicroBatcher, "submit", signalling_submit)
    gone, *kept = random_images(3, seed=11)

    async def scenario():
        # The batch timer never fires during the test: only a full batch (two images) leaves.
        gateway = fake_and_gateway(batch_wait_timeout_s=60.0, max_batch_size=2, default_label="")
        async with gateway as (ports, _channel, fake, _servicer), http_client(ports) as client:
            files = [("files", ("gone.png", gone, "image/png"))]
            abandoned = asyncio.create_task(client.post("/predict", files=files))
            await asyncio.wait_for(queued.wait(), 30)  # the request waits in its batch
            abandoned.cancel()  # the client gives up and closes its connection
            with contextlib.suppress(asyncio.CancelledError):
                await abandoned
            # 499 is recorded once the gateway has seen the disconnect and cancelled the request in its batch.
            closed = 'tlserve_requests_total{code="499",protocol="http",route="/predict"} 1.0'
            deadline = asyncio.get_running_loop().time() + 30
            while closed not in (metrics := (await client.get("/metrics")).text):
                assert asyncio.get_running_loop().time() < deadline, f"no 499 recorded:\n{metrics}"
                await asyncio.sleep(0.05)
            # A two-image request fills a batch on its own: it leaves now, with whatever else is still queued.
            files = [("files", (f"{index}.png", image, "image/png")) for index, image in enumerate(kept)]
            response = await client.post("/predict", files=files)
        return response, fake  # the gateway has stopped: every batch it sent has reached the fake

    response, fake = asyncio.run(scenario())
    sent = [[image_label(image) for image in call.inputs["image_bytes"].string_val] for call in fake.predict_requests]
    assert response.status_code == 200
    assert [prediction["label"] for prediction in response.json()["predictions"]] == [image_label(i) for i in kept]
    assert sent == [[image_label(image) for image in kept]]  # the abandoned request's image never went upstream


def test_grpc_request_over_the_body_limit_is_resource_exhausted():
    async def scenario():
        async with fake_and_gateway(max_body_bytes=100_000) as (_, channel, fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(tf_serving_request([b"\0" * 200_000]), timeout=10)
            return caught.value.code(), len(fake.predict_requests)

    code, sent = asyncio.run(scenario())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sent == 0
