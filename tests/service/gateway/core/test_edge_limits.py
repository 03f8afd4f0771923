"""The gateway's edges (issue 12): decoded-pixel budget, row limits while the body streams in, identifier lengths,
dtype and zero-row messages; over HTTP (TestClient) and gRPC (the real wire code)."""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

from service.gateway.errors import PayloadTooLarge
from service.gateway.http import json_offload
from service.gateway.http.body_limits import RowCounter
from tests.conftest import encode_image
from tests.service.gateway.in_process import fake_and_gateway, tf_serving_request

LONG_NAME = "m" * 20_000


def flat_png(size: int) -> bytes:
    return encode_image(np.full((size, size, 3), 7, dtype=np.uint8))


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_predict_returns_413_when_the_images_together_exceed_the_pixel_budget(make_client, fake_upstream):
    client = make_client(max_request_pixels=3 * 100 * 100)
    files = [("files", (f"{index}.png", flat_png(100), "image/png")) for index in range(4)]
    response = client.post("/predict", files=files)
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "message": "the request's images decode to 40000 pixels, more than the per-request budget of 30000; "
        "send fewer or smaller images",
    }
    assert fake_upstream.predict_requests == []  # refused from the headers, nothing went upstream


def test_tf_serving_predict_counts_the_pixel_budget_over_b64_images(make_client):
    client = make_client(max_request_pixels=3 * 100 * 100)
    response = client.post("/v1/models/demo:predict", json={"instances": [b64(flat_png(100))] * 4})
    assert response.status_code == 413
    assert "per-request budget of 30000" in response.json()["error"]


def test_an_over_rows_pixel_body_is_refused_before_it_is_parsed(make_client, monkeypatch):
    parsed = []
    monkeypatch.setattr(json_offload, "load_json", lambda body: parsed.append(body))
    client = make_client(max_images_per_request=4)
    pixels = np.zeros((5, 8, 8, 3), np.uint8).tolist()
    response = client.post("/v1/models/demo:predict", json={"signature_name": "predict_pixels", "instances": pixels})
    assert response.status_code == 413
    assert response.json()["error"] == "the body has at least 5 rows (images), more than the limit of 4"
    assert parsed == []  # neither parsed nor converted


def test_an_over_rows_columnar_body_is_refused_before_it_is_parsed(make_client, monkeypatch):
    parsed = []
    monkeypatch.setattr(json_offload, "load_json", lambda body: parsed.append(body))
    client = make_client(max_images_per_request=4)
    pixels = np.zeros((5, 2, 2, 3), np.uint8).tolist()
    body = {"signature_name": "predict_pixels", "inputs": {"pixels": pixels}}
    response = client.post("/v1/models/demo:predict", json=body)
    assert response.status_code == 413
    assert parsed == []


def test_rows_at_the_limit_are_converted_and_served(make_client):
    client = make_client(max_images_per_request=4)
    pixels = np.zeros((4, 2, 2, 3), np.uint8).tolist()
    response = client.post("/v1/models/demo:predict", json={"signature_name": "predict_pixels", "instances": pixels})
    assert response.status_code == 200, response.text


def rows_seen(body: bytes, max_rows: int, chunk_size: int) -> int:
    counter = RowCounter(max_rows)
    for start in range(0, len(body), chunk_size):
        counter.feed(body[start : start + chunk_size])
    return max(counter.rows.values(), default=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 10_000])
def test_row_counter_counts_rows_across_chunk_boundaries_and_ignores_brackets_in_strings(chunk_size):
    body = json.dumps(
        {"signature_name": 'a[b{"]\\', "instances": [{"b64": "QUJD"}, {"b64": 'x"[[\\'}, {"b64": "RA=="}]}
    ).encode()
    assert rows_seen(body, 10, chunk_size) == 3
    with pytest.raises(PayloadTooLarge, match="limit of 2"):
        rows_seen(body, 2, chunk_size)


def test_row_counter_counts_rows_of_named_columnar_inputs_not_their_pixel_rows():
    pixels = np.zeros((3, 30, 30, 3), np.uint8).tolist()  # 30 image rows per image, 3 images
    body = json.dumps({"inputs": {"pixels": pixels}}).encode()
    assert rows_seen(body, 10, 4096) == 3


def test_predict_returns_404_for_a_model_name_longer_than_255_characters_over_http(client):
    response = client.post(f"/v1/models/{LONG_NAME}:predict", json={"instances": [b64(flat_png(8))]})
    assert response.status_code == 404
    assert response.json()["error"] == (
        f"model name {'m' * 40!r}... (20000 characters) is longer than 255 characters: no such model"
    )
    response = client.post(f"/predict?model={LONG_NAME}", files=[("files", ("a.png", flat_png(8), "image/png"))])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/models/{LONG_NAME}").status_code == 404
    assert client.get(f"/v1/models/demo/labels/{'l' * 300}").status_code == 404


def test_a_float_tensor_sent_as_image_bytes_names_its_dtype(make_client):
    from service.gateway.core.predict_checks import check_predict_request

    request = tf_serving_request([flat_png(8)])
    request.inputs["image_bytes"].Clear()
    request.inputs["image_bytes"].dtype = types_pb2.DT_FLOAT
    request.inputs["image_bytes"].tensor_shape.dim.add(size=1)
    request.inputs["image_bytes"].float_val.append(0.5)
    with pytest.raises(Exception, match="input 'image_bytes' is DT_FLOAT; it takes encoded images") as caught:
        check_predict_request(request, max_images=4, max_pixels=10**6)
    assert caught.value.http_status == 400


def test_grpc_edges_answer_not_found_and_invalid_argument_never_resource_exhausted():
    async def scenario():
        async with fake_and_gateway() as (_ports, channel, fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answers = []
            long_name = tf_serving_request([flat_png(8)], model=LONG_NAME)
            floats = tf_serving_request([flat_png(8)])
            floats.inputs["image_bytes"].Clear()
            floats.inputs["image_bytes"].dtype = types_pb2.DT_FLOAT
            floats.inputs["image_bytes"].tensor_shape.dim.add(size=1)
            floats.inputs["image_bytes"].float_val.append(0.5)
            empty = tf_serving_request([])
            empty.model_spec.signature_name = "predict_pixels"
            del empty.inputs["image_bytes"]
            empty.inputs["pixels"].dtype = types_pb2.DT_UINT8
            for size in (0, 8, 8, 3):
                empty.inputs["pixels"].tensor_shape.dim.add(size=size)
            for request in (long_name, floats, empty):
                try:
                    await stub.Predict(request, timeout=10)
                    answers.append(("OK", ""))
                except grpc.aio.AioRpcError as exc:
                    answers.append((exc.code().name, exc.details()))
            status = get_model_status_pb2.GetModelStatusRequest()
            status.model_spec.name = LONG_NAME
            try:
                await model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=10)
            except grpc.aio.AioRpcError as exc:
                answers.append((exc.code().name, exc.details()))
            return answers, fake.predict_requests

    answers, sent = asyncio.run(scenario())
    assert [code for code, _ in answers] == ["NOT_FOUND", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "NOT_FOUND"]
    assert "(20000 characters) is longer than 255 characters" in answers[0][1]
    assert answers[1][1].startswith("input 'image_bytes' is DT_FLOAT")
    assert answers[2][1] == "input 'pixels' has 0 rows; send at least one image"
    assert sent == []
