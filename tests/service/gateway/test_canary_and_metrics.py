"""Canary share of unpinned traffic, upstream error mapping, readiness and /metrics counting what happened."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import random_images
from tests.service.gateway.fakes import rpc_error


def samples(client, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def predict(client, query: str = ""):
    return client.post(f"/predict?{query}", files=[("files", ("a.png", random_images(1)[0], "image/png"))])


@pytest.fixture
def canary_upstream(fake_upstream):
    fake_upstream.models["demo"] = {1: "stable", 2: "canary", 3: None}
    return fake_upstream


def test_canary_share_sends_part_of_unpinned_traffic_to_the_canary_label(make_client, canary_upstream):
    client = make_client(canary_share=0.5)
    versions = [predict(client).json()["version"] for _ in range(40)]
    assert 8 <= versions.count(2) <= 32  # canary
    assert versions.count(2) + versions.count(3) == 40  # the rest: latest
    labels = [request.model_spec.version_label for request in canary_upstream.predict_requests]
    assert 8 <= labels.count("canary") <= 32
    assert set(labels) == {"canary", ""}


def test_canary_share_never_reroutes_pinned_requests(make_client, canary_upstream):
    client = make_client(canary_share=1.0)
    assert {predict(client, "label=stable").json()["version"] for _ in range(10)} == {1}
    assert {predict(client, "version=3").json()["version"] for _ in range(10)} == {3}
    assert predict(client).json()["version"] == 2
    info = samples(client, "tlserve_model_info")
    assert info[(("label", "canary"), ("model", "demo"), ("version", "2"))] == 1
    assert info[(("label", "stable"), ("model", "demo"), ("version", "1"))] == 1


def test_canary_share_falls_back_to_latest_when_no_canary_exists(make_client, fake_upstream):
    client = make_client(canary_share=1.0)
    response = predict(client)
    assert response.status_code == 200
    assert response.json()["version"] == 2


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.INTERNAL, 502),
    ],
)
def test_upstream_errors_map_through_the_one_error_table(client, fake_upstream, code, status):
    fake_upstream.fail_with = rpc_error(code, "secret upstream detail")
    response = predict(client)
    assert response.status_code == status
    error = response.json()["error"]
    if status >= 500:
        assert "secret" not in error["message"]  # 5xx answers are generic; the detail goes to the log
    assert samples(client, "tlserve_upstream_errors_total") == {(("code", code.name),): 1}


def test_readyz_is_503_until_the_default_model_is_available(make_client, fake_upstream):
    assert make_client().get("/readyz").status_code == 200
    assert make_client(default_model="missing").get("/readyz").status_code == 503


def test_metrics_count_requests_by_route_and_code(client):
    for _ in range(3):
        assert predict(client).status_code == 200
    assert predict(client, "model=nope").status_code == 404
    client.get("/v1/models/demo")
    requests = samples(client, "tlserve_requests_total")
    assert requests[(("code", "200"), ("protocol", "http"), ("route", "/predict"))] == 3
    assert requests[(("code", "404"), ("protocol", "http"), ("route", "/predict"))] == 1
    assert requests[(("code", "200"), ("protocol", "http"), ("route", "/v1/models/{name}"))] == 1
    assert samples(client, "tlserve_images_total") == {(("model", "demo"), ("version", "2")): 3}
    durations = samples(client, "tlserve_request_duration_seconds_count")
    assert durations[(("protocol", "http"), ("route", "/predict"))] == 4
    assert samples(client, "tlserve_inflight_requests") == {(): 1}  # the /metrics request itself


def test_model_info_follows_a_label_that_moves(client, fake_upstream):
    assert predict(client, "label=stable").json()["version"] == 2
    fake_upstream.models["demo"] = {1: "stable", 2: None}
    assert predict(client, "label=stable").json()["version"] == 1
    info = samples(client, "tlserve_model_info")
    assert info == {(("label", "stable"), ("model", "demo"), ("version", "1")): 1}


def test_upstream_predicts_are_counted_per_label_and_outcome(make_client, canary_upstream):
    client = make_client(canary_share=1.0)
    assert predict(client).status_code == 200
    assert predict(client, "label=stable").status_code == 200
    assert predict(client, "label=gone").status_code == 404
    counts = samples(client, "tlserve_upstream_predicts_total")
    assert counts[(("code", "OK"), ("label", "canary"))] == 1
    assert counts[(("code", "OK"), ("label", "stable"))] == 1
    assert counts[(("code", "NOT_FOUND"), ("label", "other"))] == 1  # unknown labels must not grow the series


def test_missing_canary_is_probed_once_then_skipped_and_not_counted_as_an_error(make_client, fake_upstream):
    client = make_client(canary_share=1.0)
    assert all(predict(client).status_code == 200 for _ in range(5))
    labels = [request.model_spec.version_label for request in fake_upstream.predict_requests]
    assert labels == ["canary", "", "", "", "", ""]  # one probe, then straight to the default version
    counts = samples(client, "tlserve_upstream_predicts_total")
    assert counts == {(("code", "OK"), ("label", "")): 5}
