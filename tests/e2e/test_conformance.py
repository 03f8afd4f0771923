"""Real processes: every way in (multipart, JSON, TF-Serving REST and gRPC, the CLI) gives the in-process answer."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import random_images
from tests.e2e.conftest import GATEWAY_ENV, MODEL_NAME, UPSTREAMS, serving_over
from tests.support.gateway import subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOLERANCE = 1e-6
CONCURRENT_CLIENTS = 32
# The concurrency test's gateway: a batch leaves only when full (the wait is longer than the request deadline), so
# 32 concurrent one-image requests make exactly 2 batches however slowly they arrive; without batching they fail.
# No default label: a probe of the absent `stable` label would go upstream alone, in a batch that never fills.
FULL_BATCH_SIZE = CONCURRENT_CLIENTS // 2
FULL_BATCH_ENV = {
    **GATEWAY_ENV,
    "TLSERVE_DEFAULT_LABEL": "",
    "TLSERVE_MAX_BATCH_SIZE": str(FULL_BATCH_SIZE),
    "TLSERVE_BATCH_WAIT_TIMEOUT_S": str(2 * float(GATEWAY_ENV["TLSERVE_REQUEST_TIMEOUT_S"])),
}


def scores_by_label(prediction: dict, class_names: list[str]) -> np.ndarray:
    """/predict's top_k list (every class when top_k = C) back into class-index order."""
    by_label = {item["label"]: item["score"] for item in prediction["top_k"]}
    return np.array([by_label[name] for name in class_names])


def post_one(url: str, image: bytes) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("files", ("x.png", image, "image/png"))], timeout=60)


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse the exposition with prometheus_client's own parser (fails on malformed text)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric_total(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= sample_labels
    )


def test_predict_multipart_matches_in_process_model(gateway, reference_probabilities, class_names):
    images = random_images(4, seed=11)
    files = [("files", (f"img{index}.png", image, "image/png")) for index, image in enumerate(images)]
    response = httpx.post(f"{gateway.http_url}/predict", files=files, params={"top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL_NAME
    assert body["version"] == 1
    served = np.stack([scores_by_label(prediction, class_names) for prediction in body["predictions"]])
    np.testing.assert_allclose(served, reference_probabilities(images), atol=TOLERANCE, rtol=0)
    assert [p["label"] for p in body["predictions"]] == [class_names[i] for i in served.argmax(axis=1)]


def test_predict_json_b64_matches_in_process_model(gateway, reference_probabilities, class_names):
    images = random_images(3, seed=12, fmt="JPEG")
    instances = [{"b64": base64.b64encode(image).decode()} for image in images]
    response = httpx.post(f"{gateway.http_url}/predict", json={"instances": instances, "top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    served = np.stack([scores_by_label(prediction, class_names) for prediction in response.json()["predictions"]])
    np.testing.assert_allclose(served, reference_probabilities(images), atol=TOLERANCE, rtol=0)


def test_tf_serving_rest_predict_matches_in_process_model(gateway, reference_probabilities):
    images = random_images(3, seed=13)
    body = {"signature_name": "serving_default", "instances": [{"b64": base64.b64encode(i).decode()} for i in images]}
    response = httpx.post(f"{gateway.http_url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served = np.array([row["probabilities"] for row in response.json()["predictions"]])
    np.testing.assert_allclose(served, reference_probabilities(images), atol=TOLERANCE, rtol=0)


def test_tf_serving_rest_columnar_predict_matches_in_process_model(gateway, reference_probabilities):
    images = random_images(2, seed=14)
    body = {"inputs": {"image_bytes": [{"b64": base64.b64encode(i).decode()} for i in images]}}
    response = httpx.post(f"{gateway.http_url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["outputs"]["probabilities"])
    np.testing.assert_allclose(served, reference_probabilities(images), atol=TOLERANCE, rtol=0)


def test_grpc_predict_with_tf_serving_stubs_matches_in_process_model(gateway, reference_probabilities):
    """Exactly what an unmodified TF Serving client sends: PredictRequest + tf.make_tensor_proto."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    images = random_images(3, seed=15)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    served = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(served, reference_probabilities(images), atol=TOLERANCE, rtol=0)
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1


def test_grpc_model_status_reports_version_available(gateway):
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    states = {
        status.version: get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
        for status in response.model_version_status
    }
    assert states == {1: "AVAILABLE"}


@pytest.fixture(params=UPSTREAMS)
def full_batch_gateway(request: pytest.FixtureRequest, e2e_models_dir, tmp_path):
    with serving_over(request.param, e2e_models_dir, FULL_BATCH_ENV, tmp_path / "serve.log") as serving:
        yield serving


def test_concurrent_clients_share_batches_and_each_gets_its_own_answer(
    full_batch_gateway, reference_probabilities, class_names
):
    gateway = full_batch_gateway
    images = random_images(CONCURRENT_CLIENTS, seed=16)
    before = metric_samples(gateway.metrics_text())

    async def one_client(client: httpx.AsyncClient, image: bytes) -> dict:
        response = await client.post("/predict", files=[("files", ("x.png", image, "image/png"))], params={"top_k": 3})
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    async def all_clients() -> list[dict]:
        limits = httpx.Limits(max_connections=CONCURRENT_CLIENTS)
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one_client(client, image) for image in images))

    predictions = asyncio.run(all_clients())
    served = np.stack([scores_by_label(prediction, class_names) for prediction in predictions])
    np.testing.assert_allclose(served, reference_probabilities(images), atol=TOLERANCE, rtol=0)

    after = metric_samples(gateway.metrics_text())
    batches = metric_total(after, "tlserve_batch_size_count") - metric_total(before, "tlserve_batch_size_count")
    batched_images = metric_total(after, "tlserve_batch_size_sum") - metric_total(before, "tlserve_batch_size_sum")
    assert batched_images == CONCURRENT_CLIENTS
    assert batches == CONCURRENT_CLIENTS // FULL_BATCH_SIZE, f"{batches} upstream Predicts, not full batches"


def test_metrics_parse_and_count_what_happened(gateway):
    route_labels = {"protocol": "http", "code": "200"}
    before = metric_samples(gateway.metrics_text())
    for image in random_images(3, seed=17):
        response = httpx.post(
            f"{gateway.http_url}/predict", files=[("files", ("x.png", image, "image/png"))], timeout=60
        )
        assert response.status_code == 200
    bad = httpx.post(
        f"{gateway.http_url}/predict", files=[("files", ("x.png", b"not an image", "image/png"))], timeout=60
    )
    assert bad.status_code == 400
    after = metric_samples(gateway.metrics_text())

    def delta(name: str, **labels: str) -> float:
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    assert delta("tlserve_requests_total", route="/predict", **route_labels) == 3
    assert delta("tlserve_requests_total", protocol="http", route="/predict", code="400") == 1
    assert delta("tlserve_images_total", model=MODEL_NAME, version="1") == 3
    assert delta("tlserve_request_duration_seconds_count", protocol="http", route="/predict") == 4


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tlserve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=120, check=False)


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-images")
    paths = []
    for index, image in enumerate(random_images(2, seed=18)):
        path = folder / f"sample{index}.png"
        path.write_bytes(image)
        paths.append(path)
    return paths


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_predict_prints_the_model_top_label(gateway, sample_files, reference_probabilities, class_names, protocol):
    target = ["--url", gateway.http_url] if protocol == "http" else ["--grpc", gateway.grpc_target]
    result = run_cli("predict", *map(str, sample_files), *target, "--model", MODEL_NAME, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    expected = np.argsort(-reference_probabilities([path.read_bytes() for path in sample_files]), axis=1)[:, :2]
    assert len(lines) == len(sample_files)
    for line, path, ranked in zip(lines, sample_files, expected, strict=True):
        # `path  label score  label score  (demo v1)`: exactly --top-k label/score pairs between name and model.
        name, *pairs, model, version = line.split()
        assert name == str(path)
        assert (model, version) == (f"({MODEL_NAME}", "v1)")
        assert len(pairs) == 2 * 2, line
        labels, scores = pairs[0::2], [float(score) for score in pairs[1::2]]
        assert labels == [class_names[index] for index in ranked]
        assert scores == sorted(scores, reverse=True)


def test_cli_predict_bad_path_exits_2_with_one_line(gateway, tmp_path):
    result = run_cli("predict", str(tmp_path / "missing.png"), "--url", gateway.http_url)
    assert result.returncode == 2
    assert result.stderr.strip() == f"tlserve: error: no such file: {tmp_path / 'missing.png'}"
