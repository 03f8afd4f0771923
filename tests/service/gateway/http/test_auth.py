"""With API keys set, nothing that reads or changes what serves answers without a key (issue 12): /metrics too,
unless `public_metrics` opens it; /readyz keeps its status code for probes but names models only to a key."""

from __future__ import annotations

import pytest

KEYS = ("k1", "k2")
MODEL_FACTS = ("demo", "tlserve_model_info")


def test_metrics_answer_401_without_a_key_when_keys_are_set(make_client):
    response = make_client(api_keys=KEYS).get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert not [fact for fact in MODEL_FACTS if fact in response.text]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "k2"},
        # What Prometheus sends with `authorization: {credentials_file: ...}` (type Bearer by default).
        {"Authorization": "Bearer k1"},
    ],
)
def test_metrics_answer_200_with_a_key(make_client, headers):
    client = make_client(api_keys=KEYS)
    client.post("/predict", files=[("files", ("a.png", _png(), "image/png"))], headers=headers)
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert "tlserve_model_info" in response.text


def test_a_wrong_key_is_401_on_metrics(make_client):
    assert make_client(api_keys=KEYS).get("/metrics", headers={"X-API-Key": "nope"}).status_code == 401


def test_public_metrics_opens_metrics_only(make_client):
    client = make_client(api_keys=KEYS, public_metrics=True)
    assert client.get("/metrics").status_code == 200
    assert client.post("/predict", files=[("files", ("a.png", _png(), "image/png"))]).status_code == 401
    assert client.get("/v1/models/demo").status_code == 401


def test_metrics_need_no_key_when_keys_are_off(make_client):
    assert make_client().get("/metrics").status_code == 200


def test_readyz_keeps_its_status_for_probes_but_names_models_only_to_a_key(make_client):
    client = make_client(api_keys=KEYS)
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ready"}
    shown = client.get("/readyz", headers={"X-API-Key": "k1"})
    assert shown.status_code == 200
    assert shown.json()["models"] == {"demo": "AVAILABLE"}


def test_readyz_without_a_key_is_503_when_not_ready_and_says_no_more(make_client):
    anonymous = make_client(api_keys=KEYS, default_model="missing").get("/readyz")
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "not ready"}


def test_readyz_names_models_to_everyone_when_keys_are_off(make_client):
    assert make_client().get("/readyz").json()["models"] == {"demo": "AVAILABLE"}


def _png() -> bytes:
    from tests.conftest import random_images

    return random_images(1)[0]
