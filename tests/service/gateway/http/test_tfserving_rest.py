"""TF Serving's REST API on the gateway: the colon routes, row/columnar bodies, status/metadata JSON, error shape."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.conftest import random_images
from tests.service.gateway.fakes import image_label


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/demo:predict", 2),
        ("/v1/models/demo/versions/1:predict", 1),
        ("/v1/models/demo/labels/stable:predict", 2),
    ],
)
def test_row_format_predict_on_every_colon_route(client, fake_upstream, path, version):
    images = random_images(2)
    response = client.post(path, json={"instances": [b64(image) for image in images]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [row["classes"][0] for row in predictions] == [image_label(image) for image in images]
    assert predictions[0]["scores"] == pytest.approx([0.7, 0.2, 0.1])
    assert fake_upstream.predict_requests[-1].model_spec.version.value in (0, version)


def test_columnar_format_answers_outputs_by_name(client):
    image = random_images(1)[0]
    response = client.post("/v1/models/demo:predict", json={"inputs": {"image_bytes": [b64(image)]}})
    assert response.status_code == 200
    outputs = response.json()["outputs"]
    assert outputs["classes"][0][0] == image_label(image)
    assert np.asarray(outputs["probabilities"]).shape == (1, 3)


def test_named_row_instances_and_numeric_inputs_use_the_signature_dtypes(client, fake_upstream):
    pixels = np.zeros((2, 4, 4, 3), np.uint8).tolist()
    body = {"signature_name": "predict_pixels", "instances": [{"pixels": pixels[0]}, {"pixels": pixels[1]}]}
    response = client.post("/v1/models/demo:predict", json=body)
    assert response.status_code == 200, response.text
    sent = fake_upstream.predict_requests[-1]
    assert sent.model_spec.signature_name == "predict_pixels"
    assert sent.inputs["pixels"].dtype == 4  # DT_UINT8, from the signature, not guessed from JSON
    assert response.json()["predictions"] == [pytest.approx([1 / 3] * 3)] * 2


def test_status_route_prints_tf_serving_json(client):
    response = client.get("/v1/models/demo/versions/1")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def test_metadata_route_unpacks_the_signature_def_map(client):
    response = client.get("/v1/models/demo/labels/stable/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "demo", "version": "2", "signature_name": ""}
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["image_bytes"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/v1/models/nope", None, 404),
        ("get", "/v1/models/demo/versions/9/metadata", None, 404),
        ("post", "/v1/models/demo:predict", {"instances": [{"b64": "!!"}]}, 400),
        # Bodies TF Serving cannot use are 400 there (never 422), so they are 400 here too.
        ("post", "/v1/models/demo:predict", {"instances": [], "inputs": []}, 400),
        ("post", "/v1/models/demo:predict", [1, 2], 400),
        ("post", "/v1/models/demo:predict", {"instances": [{"bad": 1}]}, 400),
        ("post", "/v1/models/demo:predict", {"signature_name": "nope", "instances": [1]}, 400),
        ("post", "/v1/models/demo:predict", {"instances": [b64(b"not an image")]}, 400),
    ],
)
def test_tf_serving_routes_answer_errors_in_tf_serving_shape(client, method, path, body, status):
    response = client.request(method, path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert isinstance(error, str)
    assert error


def test_malformed_json_on_tf_serving_route_is_400(client):
    response = client.post("/v1/models/demo:predict", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


@pytest.mark.parametrize(
    "path", ["/v1/models/demo:predict", "/v1/models/demo/versions/1:predict", "/v1/models/demo/labels/stable:predict"]
)
def test_json_nested_deeper_than_the_recursion_limit_is_400_on_every_colon_route(client, path):
    body = b"[" * 5000 + b"]" * 5000
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_deeply_nested_input_values_are_400_not_500(client):
    depth = 900  # parses as JSON, but converting it to a tensor recurses past the limit
    body = b'{"inputs": {"image_bytes": ' + b"[" * depth + b'"x"' + b"]" * depth + b"}}"
    response = client.post("/v1/models/demo:predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_tf_serving_routes_require_the_api_key_when_configured(make_client):
    client = make_client(api_keys=("k",))
    assert client.get("/v1/models/demo").status_code == 401
    assert client.get("/v1/models/demo").json() == {
        "error": "a valid API key is required (header X-API-Key or Authorization: Bearer)"
    }
    assert client.get("/v1/models/demo", headers={"authorization": "Bearer k"}).status_code == 200
