"""The optional REST port: TF Serving's status JSON (what Kubernetes probes read), metadata, Prometheus metrics."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import random_images
from tests.support.modelserver import predict_request, running_model_server

CONFIG = """
model_config_list {
  config { name: "demo" base_path: "demo" model_platform: "tensorflow" version_labels { key: "stable" value: 1 } }
}
"""


@pytest.fixture(scope="module")
def server(module_repo):
    with running_model_server(module_repo(versions=(1,), config=CONFIG), rest_api_port=-1) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as client:
        yield client


def test_status_json_is_tf_servings(http):
    response = http.get("/v1/models/demo")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def test_status_by_version_and_label(http):
    assert http.get("/v1/models/demo/versions/1").json()["model_version_status"][0]["version"] == "1"
    assert http.get("/v1/models/demo/labels/stable").json()["model_version_status"][0]["version"] == "1"


def test_status_of_unknown_model_is_404_with_error_body(http):
    response = http.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find any versions of model nope"}


def test_status_of_unknown_label_is_400(http):
    response = http.get("/v1/models/demo/labels/canary")
    assert response.status_code == 400
    assert response.json() == {"error": "Unrecognized servable version label: canary"}


def test_metadata_json_lists_both_signatures(http):
    body = http.get("/v1/models/demo/metadata").json()
    assert body["model_spec"]["name"] == "demo"
    assert body["model_spec"]["version"] == "1"
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "predict_pixels"} <= set(signatures)


def test_prometheus_route_counts_requests_with_tf_serving_names(server, http):
    stub = server.prediction_stub()
    stub.Predict(predict_request(random_images(1)), timeout=30)
    text = http.get("/monitoring/prometheus/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    counts = {
        sample.labels["status"]: sample.value
        for sample in families[":tensorflow:serving:request_count"].samples
        if sample.labels["model_name"] == "demo"
    }
    assert counts["OK"] >= 1
    latency = families[":tensorflow:serving:request_latency"]
    assert latency.type == "histogram"
    assert any(s.name.endswith("_count") and s.labels["API"] == "predict" for s in latency.samples)
