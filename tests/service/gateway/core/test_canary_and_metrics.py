"""Routing of unpinned traffic (canary share, default label), upstream error mapping, readiness and /metrics."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc

from service.gateway.core import routing
from tests.conftest import random_images
from tests.service.gateway.fakes import FakeModelServer, rpc_error
from tests.service.gateway.in_process import fake_and_gateway, tf_serving_request


def samples(client, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def predict(client, query: str = ""):
    return client.post(f"/predict?{query}", files=[("files", ("a.png", random_images(1)[0], "image/png"))])


def tf_predict(client, path: str = "/v1/models/demo:predict"):
    instances = [{"b64": base64.b64encode(random_images(1)[0]).decode()}]
    return client.post(path, json={"instances": instances})


def sent_labels(fake) -> list[str]:
    return [request.model_spec.version_label for request in fake.predict_requests]


@pytest.fixture
def no_recheck(monkeypatch):
    # Exact probe counts: a slow machine must not reach the missing-label recheck interval within one test.
    monkeypatch.setattr(routing, "MISSING_LABEL_RECHECK_S", 3600.0)


@pytest.fixture
def canary_upstream(fake_upstream):
    # The canary is the newest version, as after `tlserve retrain`: the server's latest is the candidate.
    fake_upstream.models["demo"] = {1: "stable", 2: "canary", 3: None}
    return fake_upstream


def test_canary_share_sends_part_of_unpinned_traffic_to_the_canary_label(make_client, canary_upstream):
    client = make_client(canary_share=0.5)
    versions = [predict(client).json()["version"] for _ in range(40)]
    assert 8 <= versions.count(2) <= 32  # canary
    assert versions.count(2) + versions.count(1) == 40  # the rest: stable, never the unlabelled latest
    labels = sent_labels(canary_upstream)
    assert 8 <= labels.count("canary") <= 32
    assert set(labels) == {"canary", "stable"}


def test_unpinned_requests_go_to_the_default_label_not_the_latest_version(make_client, canary_upstream):
    client = make_client()
    assert {predict(client).json()["version"] for _ in range(5)} == {1}
    assert all(tf_predict(client).status_code == 200 for _ in range(5))
    assert sent_labels(canary_upstream) == ["stable"] * 10
    counts = samples(client, "tlserve_upstream_predicts_total")
    assert counts == {(("code", "OK"), ("label", "stable")): 10}  # metrics carry the label actually used
    info = samples(client, "tlserve_model_info")
    assert info == {(("label", "stable"), ("model", "demo"), ("version", "1")): 1}


def test_tf_serving_predict_with_a_version_or_label_is_never_rerouted(make_client, canary_upstream):
    client = make_client(canary_share=1.0)
    assert tf_predict(client, "/v1/models/demo/versions/3:predict").status_code == 200
    assert tf_predict(client, "/v1/models/demo/labels/stable:predict").status_code == 200
    assert tf_predict(client).status_code == 200
    specs = [request.model_spec for request in canary_upstream.predict_requests]
    assert [(spec.version.value, spec.version_label) for spec in specs] == [(3, ""), (0, "stable"), (0, "canary")]


def test_grpc_predict_without_a_version_goes_to_the_default_label():
    fake = FakeModelServer({"demo": {1: "stable", 2: None}})

    async def scenario():
        async with fake_and_gateway(fake) as (_, channel, _fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            unpinned = await stub.Predict(tf_serving_request(random_images(1)), timeout=10)
            pinned_request = tf_serving_request(random_images(1))
            pinned_request.model_spec.version.value = 2
            pinned = await stub.Predict(pinned_request, timeout=10)
            return unpinned.model_spec.version.value, pinned.model_spec.version.value

    assert asyncio.run(scenario()) == (1, 2)
    assert sent_labels(fake) == ["stable", ""]


def test_empty_default_label_keeps_the_servers_latest_version(make_client, canary_upstream):
    client = make_client(default_label="")
    assert predict(client).json()["version"] == 3
    assert sent_labels(canary_upstream) == [""]


def test_without_the_default_label_unpinned_requests_get_the_latest_after_one_probe(
    make_client, fake_upstream, no_recheck
):
    fake_upstream.models["demo"] = {1: None, 2: None}
    client = make_client()
    assert [predict(client).json()["version"] for _ in range(3)] == [2, 2, 2]
    assert tf_predict(client).status_code == 200
    assert sent_labels(fake_upstream) == ["stable", "", "", "", ""]  # one probe per interval, for every route
    counts = samples(client, "tlserve_upstream_predicts_total")
    assert counts == {(("code", "OK"), ("label", "")): 4}  # the probe is not an error


def test_a_missing_default_label_is_probed_again_after_the_interval(make_client, fake_upstream, monkeypatch):
    monkeypatch.setattr(routing, "MISSING_LABEL_RECHECK_S", 0.0)
    fake_upstream.models["demo"] = {1: None, 2: None}
    client = make_client()
    assert predict(client).status_code == 200
    fake_upstream.models["demo"] = {1: "stable", 2: None}  # a label appears (e.g. the first promote)
    assert predict(client).json()["version"] == 1
    assert sent_labels(fake_upstream) == ["stable", "", "stable"]


def test_pinned_requests_for_unknown_labels_are_404_and_never_fall_back(client, fake_upstream):
    response = predict(client, "label=nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert sent_labels(fake_upstream) == ["nope"]


def test_canary_share_never_reroutes_pinned_requests(make_client, canary_upstream):
    client = make_client(canary_share=1.0)
    assert {predict(client, "label=stable").json()["version"] for _ in range(10)} == {1}
    assert {predict(client, "version=3").json()["version"] for _ in range(10)} == {3}
    assert predict(client).json()["version"] == 2
    info = samples(client, "tlserve_model_info")
    assert info[(("label", "canary"), ("model", "demo"), ("version", "2"))] == 1
    assert info[(("label", "stable"), ("model", "demo"), ("version", "1"))] == 1


def test_canary_share_falls_back_to_the_default_label_when_no_canary_exists(make_client, fake_upstream):
    fake_upstream.models["demo"] = {1: "stable", 2: None}
    client = make_client(canary_share=1.0)
    response = predict(client)
    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert sent_labels(fake_upstream) == ["canary", "stable"]


def test_canary_share_falls_back_to_latest_when_neither_label_exists(make_client, fake_upstream, no_recheck):
    fake_upstream.models["demo"] = {1: None, 2: None}
    client = make_client(canary_share=1.0)
    assert [predict(client).json()["version"] for _ in range(2)] == [2, 2]
    assert sent_labels(fake_upstream) == ["canary", "stable", "", ""]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.INTERNAL, 502),
    ],
)
def test_upstream_errors_map_through_the_one_error_table(client, fake_upstream, code, status):
    fake_upstream.fail_with = rpc_error(code, "secret upstream detail")
    response = predict(client, "version=2")  # pinned: one upstream call, no routing fallback
    assert response.status_code == status
    error = response.json()["error"]
    if status >= 500:
        assert "secret" not in error["message"]  # 5xx answers are generic; the detail goes to the log
    assert samples(client, "tlserve_upstream_errors_total") == {(("code", code.name),): 1}


def test_upstream_unknown_label_is_404_not_400(client, fake_upstream):
    # TF Serving and the embedded server answer an unknown label with INVALID_ARGUMENT; to clients it is missing.
    fake_upstream.fail_with = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: x")
    response = predict(client, "label=x")
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "Unrecognized servable version label: x"}


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


def test_missing_canary_is_probed_once_then_skipped_and_not_counted_as_an_error(make_client, fake_upstream, no_recheck):
    client = make_client(canary_share=1.0)
    assert all(predict(client).status_code == 200 for _ in range(5))
    labels = sent_labels(fake_upstream)
    assert labels == ["canary", "stable", "stable", "stable", "stable", "stable"]  # one probe, then the default
    counts = samples(client, "tlserve_upstream_predicts_total")
    assert counts == {(("code", "OK"), ("label", "stable")): 5}
