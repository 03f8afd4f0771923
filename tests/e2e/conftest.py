"""End-to-end fixtures: real `tlserve serve` processes (gateway + model server) over a copy of the session's version.

The conformance gateway is parametrized by its upstream: the embedded model server always, and
`tensorflow_model_server` whenever that binary is on PATH (the one skip this suite allows).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.support.gateway import ServeProcess, running_serve
from tlserve import models_config
from tlserve.models_config import ServedModel
from tlserve.processes import LOOPBACK, free_port, stop_process

MODEL_NAME = "demo"
TF_SERVING_BINARY = "tensorflow_model_server"
# A wide batching window so concurrent test clients reliably share batches. The request deadline is generous: tests
# here require every request to succeed, also while a VGG16 copy loads and warms up on 2 busy cores; the outage test
# gets its 503 from a refused connection, not from this deadline.
# The default label stays at its default (`stable`), absent from these repositories like after `tlserve train`:
# the gateway probes it once per interval (single flight) and the conformance tests run on the default config.
GATEWAY_ENV = {
    "TLSERVE_BATCHING_ENABLED": "true",
    "TLSERVE_BATCH_WAIT_TIMEOUT_S": "0.02",
    "TLSERVE_REQUEST_TIMEOUT_S": "60",
}

UPSTREAMS = [
    "embedded",
    pytest.param(
        TF_SERVING_BINARY,
        marks=pytest.mark.skipif(
            shutil.which(TF_SERVING_BINARY) is None,
            reason="tensorflow_model_server is not on PATH (TF Serving ships no pip/Debian package); "
            "conformance ran against the embedded model server only",
        ),
    ),
]


def copy_version(exported_version: Path, models_dir: Path, version: int, name: str = MODEL_NAME) -> Path:
    """Publish a copy of the session's version the way training does: stage, then one atomic rename."""
    staging = models_dir / name / f".staging-{version}"
    shutil.copytree(exported_version, staging)
    target = models_dir / name / str(version)
    staging.rename(target)
    return target


@pytest.fixture(scope="module")
def e2e_models_dir(tmp_path_factory: pytest.TempPathFactory, exported_version: Path) -> Path:
    models_dir = tmp_path_factory.mktemp("e2e") / "models"
    (models_dir / MODEL_NAME).mkdir(parents=True)
    copy_version(exported_version, models_dir, 1)
    return models_dir


@pytest.fixture(scope="session")
def reference_model(exported_version: Path):
    """The in-process model: `serving_default` of the very same SavedModel, loaded with tf.saved_model.load."""
    import tensorflow as tf

    return tf.saved_model.load(str(exported_version)).signatures["serving_default"]


@pytest.fixture(scope="session")
def reference_probabilities(reference_model):
    """images → float32 [N, C] probabilities computed in this process, one image at a time (no batching effects)."""
    import tensorflow as tf

    def compute(images: Sequence[bytes]) -> np.ndarray:
        rows = [reference_model(image_bytes=tf.constant([image]))["probabilities"].numpy()[0] for image in images]
        return np.stack(rows)

    return compute


@pytest.fixture(scope="session")
def class_names(exported_version: Path) -> list[str]:
    return (exported_version / "assets" / "labels.txt").read_text().split()


@contextlib.contextmanager
def serving_over(upstream_kind: str, models_dir: Path, env: dict[str, str], log_path: Path) -> Iterator[ServeProcess]:
    """A gateway over `models_dir`, with the embedded model server or a real `tensorflow_model_server` upstream."""
    if upstream_kind == "embedded":
        with running_serve(models_dir, env=env, log_path=log_path) as serving:
            yield serving
    else:
        with (
            running_tf_serving(models_dir) as target,
            running_serve(upstream=target, env=env, log_path=log_path) as serving,
        ):
            yield serving


@pytest.fixture(scope="module", params=UPSTREAMS)
def gateway(request: pytest.FixtureRequest, e2e_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One gateway per module and upstream kind; its log lands next to the models for debugging."""
    log_path = tmp_path_factory.mktemp("logs") / "serve.log"
    with serving_over(request.param, e2e_models_dir, GATEWAY_ENV, log_path) as serving:
        yield serving


@contextlib.contextmanager
def running_tf_serving(models_dir: Path, name: str = MODEL_NAME) -> Iterator[str]:
    """The real `tensorflow_model_server` on a free port, polling `models_dir/name` every second."""
    port = free_port()
    command = [
        TF_SERVING_BINARY,
        f"--port={port}",
        f"--model_name={name}",
        f"--model_base_path={(models_dir / name).resolve()}",
        "--file_system_poll_wait_seconds=1",
        # A broken version ends (state END with an error) at its first failed load instead of after minutes of retries.
        "--max_num_load_retries=0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        stop_process(process)


def predict_version(serving: ServeProcess, image: bytes) -> int:
    """The version that answered one /predict (raises on an error answer)."""
    import httpx

    # Longer than the gateway's deadline: the gateway, not this client, decides when a request took too long.
    timeout_s = float(GATEWAY_ENV["TLSERVE_REQUEST_TIMEOUT_S"]) + 30.0
    response = httpx.post(
        f"{serving.http_url}/predict", files=[("files", ("x.png", image, "image/png"))], timeout=timeout_s
    )
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{serving.log_tail()}"
    return int(response.json()["version"])


@pytest.fixture
def repo(model_repo) -> Path:
    """Versions 1 and 2 of `demo` (copies of the session's tiny export), stable = 1: the promotion tests' start."""
    models_dir = model_repo("demo", versions=(1, 2))
    models_config.save_model(models_dir, ServedModel("demo", "demo", (1,), {"stable": 1}))
    return models_dir
