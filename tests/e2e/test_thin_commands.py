"""The thin commands run with TensorFlow, Keras and tensorflow_serving impossible to import, and still answer right.

Each runs as the real `tlserve` CLI in a child whose own imports of those packages fail and are logged
(tests/support/thin_site). The model server is a normal (TensorFlow) `tlserve model-server`; the gateway in front
of it, the clients and the promotion commands are thin. `tlserve serve` without --upstream keeps its gateway thin
while its embedded model server child imports TensorFlow as before.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import text_format

from tests.conftest import random_images
from tests.e2e.conftest import MODEL_NAME, copy_version
from tests.support.gateway import ServeProcess, running_serve, subprocess_env
from tests.support.modelserver import ModelServerProcess
from tests.support.thin import attempted_heavy_imports, thin_overrides, tlserve_command
from tlserve.contract import MODELS_CONFIG_FILE
from tlserve.processes import free_port
from tlserve.protocol import model_server_config_pb2, predict_pb2, prediction_service_pb2_grpc

pytestmark = pytest.mark.e2e
IMAGES = random_images(3, seed=7)
# Written and read here with the protocol package only, so this test does not follow the promotion modules' moves.
STABLE_1 = f'model_config_list {{ config {{ name: "{MODEL_NAME}" base_path: "{MODEL_NAME}" model_platform: "tensorflow"'
STABLE_1 += ' model_version_policy { specific { versions: 1 } } version_labels { key: "stable" value: 1 } } }\n'


def stable_version(models_dir: Path) -> int:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((models_dir / MODELS_CONFIG_FILE).read_text(), config)
    (model,) = config.model_config_list.config
    return int(model.version_labels["stable"])


def float_array(tensor) -> np.ndarray:
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    values = np.frombuffer(tensor.tensor_content, np.float32) if tensor.tensor_content else np.array(tensor.float_val)
    return values.reshape(shape)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, exported_version: Path) -> Path:
    """Versions 1 and 2 of `demo`, stable = 1."""
    models_dir = tmp_path_factory.mktemp("thin") / "models"
    (models_dir / MODEL_NAME).mkdir(parents=True)
    for version in (1, 2):
        copy_version(exported_version, models_dir, version)
    (models_dir / MODELS_CONFIG_FILE).write_text(STABLE_1)
    assert stable_version(models_dir) == 1
    return models_dir


@pytest.fixture(scope="module")
def model_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerProcess]:
    server = ModelServerProcess(models_dir, free_port(), tmp_path_factory.mktemp("logs") / "model-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def import_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imports") / "blocked.log"


@pytest.fixture(scope="module")
def thin_gateway(model_server: ModelServerProcess, import_log: Path) -> Iterator[ServeProcess]:
    with running_serve(upstream=model_server.target, env=thin_overrides(import_log)) as gateway:
        yield gateway


def run_thin(import_log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(thin_overrides(import_log))
    return subprocess.run([*tlserve_command(), *args], capture_output=True, text=True, env=env, timeout=180)


def test_help_answers_without_tensorflow(import_log: Path) -> None:
    result = run_thin(import_log, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: tlserve" in result.stdout
    assert "promote" in result.stdout
    assert attempted_heavy_imports(import_log) == []


def test_thin_gateway_predicts_over_http_and_grpc_like_the_model(
    thin_gateway: ServeProcess, import_log: Path, reference_probabilities, class_names: list[str]
) -> None:
    expected = reference_probabilities(IMAGES)
    files = [("files", (f"{index}.png", image, "image/png")) for index, image in enumerate(IMAGES)]
    response = httpx.post(f"{thin_gateway.http_url}/predict?top_k=3", files=files, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == (MODEL_NAME, 1)
    for prediction, probabilities in zip(body["predictions"], expected, strict=True):
        assert prediction["label"] == class_names[int(np.argmax(probabilities))]
        assert prediction["score"] == pytest.approx(float(np.max(probabilities)), abs=1e-6)

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs["image_bytes"].dtype = 7  # DT_STRING
    request.inputs["image_bytes"].tensor_shape.dim.add(size=len(IMAGES))
    request.inputs["image_bytes"].string_val.extend(IMAGES)
    with grpc.insecure_channel(thin_gateway.grpc_target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    probabilities = float_array(reply.outputs["probabilities"])
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert attempted_heavy_imports(import_log) == []
    assert "tensorflow" not in Path(f"/proc/{thin_gateway.process.pid}/maps").read_text()


@pytest.mark.parametrize("protocol", ["--url", "--grpc"])
def test_predict_command_answers_without_tensorflow(
    thin_gateway: ServeProcess, import_log: Path, tmp_path: Path, protocol: str, reference_probabilities, class_names
) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(IMAGES[0])
    target = thin_gateway.http_url if protocol == "--url" else thin_gateway.grpc_target
    result = run_thin(import_log, "predict", str(image), protocol, target, "--model", MODEL_NAME)
    assert result.returncode == 0, result.stderr
    expected_label = class_names[int(np.argmax(reference_probabilities(IMAGES[:1])[0]))]
    assert expected_label in result.stdout
    assert attempted_heavy_imports(import_log) == []


def test_models_promote_and_rollback_run_without_tensorflow(
    models_dir: Path, model_server: ModelServerProcess, import_log: Path
) -> None:
    server = ["--models-dir", str(models_dir), "--server", model_server.target]
    listing = run_thin(import_log, "models", "list", "--models-dir", str(models_dir))
    assert listing.returncode == 0, listing.stderr
    assert MODEL_NAME in listing.stdout

    unknown = run_thin(import_log, "promote", MODEL_NAME, "9", *server)
    assert unknown.returncode != 0
    assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    assert unknown.stderr.startswith("tlserve: error:")

    promoted = run_thin(import_log, "promote", MODEL_NAME, "2", "--drain", "0", *server)
    assert promoted.returncode == 0, promoted.stderr
    assert stable_version(models_dir) == 2
    shown = run_thin(import_log, "models", "show", MODEL_NAME, "--json", *server)
    assert shown.returncode == 0, shown.stderr
    versions = {entry["version"]: entry for entry in json.loads(shown.stdout)["versions"]}
    assert "stable" in versions[2]["labels"]
    assert versions[2]["state"] == "AVAILABLE"

    rolled_back = run_thin(import_log, "rollback", MODEL_NAME, "--drain", "0", *server)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert stable_version(models_dir) == 1
    assert attempted_heavy_imports(import_log) == []


def test_serve_with_embedded_model_server_keeps_the_gateway_thin(models_dir: Path, tmp_path: Path) -> None:
    import_log = tmp_path / "blocked.log"
    with running_serve(models_dir, env=thin_overrides(import_log)) as gateway:
        response = httpx.post(
            f"{gateway.http_url}/predict", files=[("files", ("x.png", IMAGES[0], "image/png"))], timeout=60
        )
        assert response.status_code == 200, response.text
        gateway_maps = Path(f"/proc/{gateway.process.pid}/maps").read_text()
    assert attempted_heavy_imports(import_log) == []
    assert "tensorflow" not in gateway_maps
