"""The gateway in front of the real embedded model server serving a real tiny VGG16 version.

Every protocol answers the in-process model's probabilities for the same files (max abs diff ≤ 1e-6).
"""

from __future__ import annotations

import asyncio
import base64

import grpc.aio
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from service.gateway.core.tensors import to_array
from tests.conftest import CLASSES, random_images
from tests.service.gateway.fakes import corrupt_png
from tests.service.gateway.in_process import http_client, running_gateway, tf_serving_request
from tests.support.modelserver import running_model_server, wait_until_available

pytestmark = pytest.mark.slow
IMAGES = random_images(4, seed=42) + random_images(2, seed=43, fmt="JPEG") + random_images(1, seed=44, fmt="WEBP")


@pytest.fixture(scope="module")
def reference_probabilities(exported_version) -> np.ndarray:
    import tensorflow as tf

    serving = tf.saved_model.load(str(exported_version)).signatures["serving_default"]
    return serving(image_bytes=tf.constant(IMAGES))["probabilities"].numpy()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, exported_version):
    import shutil

    models_dir = tmp_path_factory.mktemp("gateway_models")
    shutil.copytree(exported_version, models_dir / "demo" / "1")
    with running_model_server(models_dir) as server:
        wait_until_available(server.target, "demo", version=1, timeout_s=120)
        yield server


def test_every_protocol_answers_the_in_process_probabilities(model_server, reference_probabilities):
    async def scenario():
        async with running_gateway(model_server.port, request_timeout_s=60) as ports:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http_port}", timeout=60) as client:
                files = [
                    ("files", (f"{index}", image, "application/octet-stream")) for index, image in enumerate(IMAGES)
                ]
                predict = (await client.post("/predict?top_k=3", files=files)).json()
                instances = [{"b64": base64.b64encode(image).decode()} for image in IMAGES]
                rest = (await client.post("/v1/models/demo:predict", json={"instances": instances})).json()
                ready = (await client.get("/readyz")).status_code
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                grpc_response = await stub.Predict(tf_serving_request(IMAGES), timeout=60)
        return predict, rest, ready, to_array(grpc_response.outputs["probabilities"])

    predict, rest, ready, grpc_probabilities = asyncio.run(scenario())
    assert ready == 200
    assert np.abs(grpc_probabilities - reference_probabilities).max() <= 1e-6
    rest_probabilities = np.array([row["probabilities"] for row in rest["predictions"]])
    assert np.abs(rest_probabilities - reference_probabilities).max() <= 1e-6
    assert predict["version"] == 1
    for prediction, expected in zip(predict["predictions"], reference_probabilities, strict=True):
        best = int(np.argmax(expected))
        assert prediction["label"] == CLASSES[best]
        assert abs(prediction["score"] - expected[best]) <= 1e-6
        assert [entry["label"] for entry in prediction["top_k"]] == [CLASSES[i] for i in np.argsort(-expected)[:3]]


def test_a_truncated_image_fails_alone_in_a_merged_batch_against_the_real_model(model_server):
    bodies = [*IMAGES[1:4], corrupt_png(IMAGES[0])]

    async def scenario():
        # The batch leaves when all four requests are in it (no label probe: it would leave alone).
        settings = {"max_batch_size": len(bodies), "batch_wait_timeout_s": 30, "default_label": ""}
        gateway = running_gateway(model_server.port, request_timeout_s=60, **settings)
        async with gateway as ports, http_client(ports) as client:
            requests = [client.post("/predict", files=[("files", ("x", body, "image/png"))]) for body in bodies]
            responses = await asyncio.gather(*requests)
            metrics = (await client.get("/metrics")).text
        return responses, metrics

    responses, metrics = asyncio.run(scenario())
    assert [response.status_code for response in responses] == [200, 200, 200, 400]
    assert responses[3].json()["error"]["code"] == "invalid_image"
    # Issue 9.6: which image and what is wrong with it, never TensorFlow's graph nodes or op names.
    message = responses[3].json()["error"]["message"]
    # Named once, by the gateway (the model server's own "image 0 cannot be decoded: ..." is folded into the reason).
    assert message == "image 0 (x) could not be decoded: its PNG data is truncated or corrupt"
    for internal in ("Graph execution", "node", "[Op:"):
        assert internal not in message
    assert "\n" not in message
    # The merged call of 4 failed, then its halves: the good pair answered, the other pair failed and split into
    # one good image and the culprit. Four separate calls would have been 3 OK and 1 INVALID_ARGUMENT.
    assert 'tlserve_upstream_predicts_total{code="INVALID_ARGUMENT",label=""} 3.0' in metrics
    assert 'tlserve_upstream_predicts_total{code="OK",label=""} 2.0' in metrics


def test_an_unknown_label_is_404_on_every_protocol_against_the_real_model_server(model_server):
    # The real server says INVALID_ARGUMENT "Unrecognized servable version label: nope"; clients must see 404.
    async def scenario():
        async with running_gateway(model_server.port, request_timeout_s=60) as ports:
            async with http_client(ports) as client:
                files = [("files", ("a.png", IMAGES[0], "image/png"))]
                predict = await client.post("/predict?label=nope", files=files)
                instances = [{"b64": base64.b64encode(IMAGES[0]).decode()}]
                rest = await client.post("/v1/models/demo/labels/nope:predict", json={"instances": instances})
                unpinned = await client.post("/predict", files=files)  # no `stable` label: the latest answers
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                request = tf_serving_request(IMAGES[:1])
                request.model_spec.version_label = "nope"
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Predict(request, timeout=60)
        return predict, rest, unpinned, caught.value

    predict, rest, unpinned, grpc_error = asyncio.run(scenario())
    assert predict.status_code == 404
    assert predict.json()["error"]["code"] == "not_found"
    assert "nope" in predict.json()["error"]["message"]
    assert rest.status_code == 404
    assert "nope" in rest.json()["error"]
    assert grpc_error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in grpc_error.details()
    assert unpinned.status_code == 200
    assert unpinned.json()["version"] == 1
