"""POST /predict over a fake upstream: answers, routing by model/version/label, and every bad input's 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode_image, random_images
from tests.service.gateway.fakes import image_label


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{index}.png", image, "image/png")) for index, image in enumerate(images)]


def test_predict_multipart_answers_each_image_in_order(client):
    images = random_images(3)
    response = client.post("/predict", files=multipart(*images))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "demo"
    assert body["version"] == 2
    assert [item["label"] for item in body["predictions"]] == [image_label(image) for image in images]
    assert len(body["predictions"][0]["top_k"]) == 3


def test_predict_json_honours_top_k(client):
    image = random_images(1)[0]
    response = client.post("/predict", json={"instances": [{"b64": b64(image)}], "top_k": 1})
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    assert prediction["top_k"] == [{"label": image_label(image), "score": pytest.approx(0.7)}]


@pytest.mark.parametrize(("query", "version"), [("version=1", 1), ("label=stable", 2), ("", 2)])
def test_predict_routes_to_the_requested_version_or_label(client, query, version):
    response = client.post(f"/predict?{query}", files=multipart(random_images(1)[0]))
    assert response.status_code == 200
    assert response.json()["version"] == version


@pytest.mark.parametrize(
    ("query", "message"),
    [("model=nope", "nope"), ("version=7", "7"), ("label=canary", "canary"), ("label=bad-label", "bad-label")],
)
def test_predict_returns_404_for_unknown_model_version_or_label(client, query, message):
    response = client.post(f"/predict?{query}", files=multipart(random_images(1)[0]))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize("query", ["model=", "label=", "model=&label=stable"])
def test_predict_with_an_empty_model_or_label_is_422_not_the_default(client, fake_upstream, query):
    response = client.post(f"/predict?{query}", files=multipart(random_images(1)[0]))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "is empty" in response.json()["error"]["message"]
    assert fake_upstream.predict_requests == []


def test_predict_returns_400_when_both_version_and_label_given(client):
    response = client.post("/predict?version=1&label=stable", files=multipart(random_images(1)[0]))
    assert response.status_code == 400
    assert "not both" in response.json()["error"]["message"]


def test_predict_returns_400_invalid_image_for_undecodable_bytes(client):
    response = client.post("/predict", files=multipart(random_images(1)[0], b"this is not an image"))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_image",
        "message": "image 1 (1.png) is not a recognisable image file",  # the multipart file name, when known
    }


def test_predict_returns_400_invalid_image_for_empty_file(client):
    response = client.post("/predict", files=multipart(b""))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"


def test_predict_returns_415_for_unsupported_image_format(client):
    # A format training does not read either (TIFF, which training converts, is served: test_image_formats).
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PPM")
    response = client.post("/predict", files=multipart(buffer.getvalue()))
    assert response.status_code == 415
    assert "PPM" in response.json()["error"]["message"]


def test_predict_returns_415_for_unsupported_content_type(client):
    response = client.post("/predict", content=b"abc", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_predict_returns_413_when_body_too_large(make_client):
    client = make_client(max_body_bytes=1000)
    response = client.post("/predict", files=multipart(b"x" * 2000))
    assert response.status_code == 413
    assert "1000" in response.json()["error"]["message"]


def test_predict_returns_413_when_too_many_images(make_client):
    client = make_client(max_images_per_request=2)
    response = client.post("/predict", files=multipart(*random_images(3)))
    assert response.status_code == 413
    assert "limit of 2" in response.json()["error"]["message"]
    response = client.post("/predict", json={"instances": [{"b64": b64(image)} for image in random_images(3)]})
    assert response.status_code == 413


def test_predict_returns_413_for_decompression_bomb(make_client):
    client = make_client(max_image_pixels=100 * 100)
    bomb = encode_image(np.zeros((200, 200, 3), np.uint8))
    response = client.post("/predict", files=multipart(bomb))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "image_too_large"
    assert "200x200" in response.json()["error"]["message"]


def test_predict_returns_400_for_malformed_json(client):
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_predict_returns_400_for_json_nested_deeper_than_the_recursion_limit(client):
    body = b"[" * 5000 + b"]" * 5000
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_predict_returns_400_for_bad_base64(client):
    response = client.post("/predict", json={"instances": [{"b64": "@@not base64@@"}]})
    assert response.status_code == 400
    assert "base64" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body", [{}, {"instances": []}, {"instances": ["abc"]}, {"instances": [{"b64": "AAAA"}], "top_k": 9}, [1, 2]]
)
def test_predict_returns_422_for_json_not_matching_the_schema(client, body):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_predict_returns_422_for_multipart_without_files(client):
    response = client.post("/predict", data={"other": "x"}, files=[("upload", ("a.png", b"x", "image/png"))])
    assert response.status_code == 422
    assert "files" in response.json()["error"]["message"]


def test_predict_returns_422_for_invalid_query(client):
    response = client.post("/predict?version=zero", files=multipart(random_images(1)[0]))
    assert response.status_code == 422
    assert "version" in response.json()["error"]["message"]


def test_predict_returns_401_without_a_valid_api_key(make_client):
    client = make_client(api_keys=("secret",))
    files = multipart(random_images(1)[0])
    assert client.post("/predict", files=files).status_code == 401
    assert client.post("/predict", files=files, headers={"x-api-key": "wrong"}).status_code == 401
    assert client.post("/predict", files=files, headers={"x-api-key": "secret"}).status_code == 200
    assert client.post("/predict", files=files, headers={"authorization": "Bearer secret"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_api_keys_setting_reads_a_comma_separated_environment_variable(monkeypatch):
    from service.gateway.settings import Settings

    monkeypatch.setenv("TLSERVE_API_KEYS", "one, two")
    assert Settings().api_keys == ("one", "two")


def test_predict_returns_413_when_a_streamed_body_without_length_grows_too_large(make_client):
    client = make_client(max_body_bytes=1000)
    chunks = iter([b'{"instances": [{"b64": "', b"A" * 800, b"A" * 800, b'"}]}'])
    response = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "1000" in response.json()["error"]["message"]


@pytest.mark.parametrize("top_k", [True, False, "3", 0, 6, 2.5])
def test_json_top_k_follows_the_one_rule(client, top_k):
    # Issue 9.7: `"top_k": true` was taken as 1.
    response = client.post("/predict", json={"instances": [{"b64": b64(random_images(1)[0])}], "top_k": top_k})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "top_k must be an integer from 1 to 5" in response.json()["error"]["message"]


@pytest.mark.parametrize("top_k", ["true", "0", "6"])
def test_query_top_k_follows_the_one_rule(client, top_k):
    response = client.post(f"/predict?top_k={top_k}", files=multipart(random_images(1)[0]))
    assert response.status_code == 422
