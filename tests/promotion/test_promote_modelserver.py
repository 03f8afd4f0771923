"""Label moves against the real embedded model server (in-process), and a promote killed between its steps."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promotion.client import ModelServerClient
from promotion.promote import MoveOptions, move_label
from promotion.rollback import rollback
from tests.conftest import random_images
from tests.promotion.promote_fakes import FakeModelService, start_fake
from tests.support.modelserver import predict_request, running_model_server
from tlserve import audit, models_config
from tlserve.models_config import ServedModel

pytestmark = pytest.mark.slow

IMAGES = random_images(2, seed=5)


@pytest.fixture
def repo(model_repo) -> Path:
    models_dir = model_repo("demo", versions=(1, 2, 3))
    models_config.save_model(models_dir, ServedModel("demo", "demo", (1,), {"stable": 1}))
    return models_dir


def served_version(server, label: str = "stable") -> int:
    response = server.prediction_stub().Predict(predict_request(IMAGES, "demo", version_label=label), timeout=30)
    return int(response.model_spec.version.value)


def test_promote_and_rollback_move_the_label_on_a_running_model_server(repo: Path) -> None:
    with running_model_server(repo) as server, ModelServerClient(server.target) as client:
        options = MoveOptions(server=client, drain_s=0, load_timeout_s=60)
        assert served_version(server) == 1

        move_label(repo, "demo", 2, options=options)
        assert served_version(server) == 2
        assert client.version_states("demo")[2] == "AVAILABLE"
        assert models_config.load_model(repo, "demo").versions == (2,)  # old stable unloaded after the move

        move_label(repo, "demo", 3, label="canary", options=options)
        assert (served_version(server), served_version(server, "canary")) == (2, 3)

        rollback(repo, "demo", options=options)
        assert served_version(server) == 1
        assert models_config.load_model(repo, "demo").labels == {"stable": 1, "canary": 3}


def test_a_one_step_label_move_is_refused_by_the_model_server(repo: Path) -> None:
    """Why promotion needs two steps: the embedded server, like TF Serving, refuses it in one."""
    one_step = models_config.put_model(
        models_config.read_config(repo / "models.config"), ServedModel("demo", "demo", (1, 2), {"stable": 2})
    )
    with running_model_server(repo) as server, ModelServerClient(server.target) as client:
        with pytest.raises(Exception, match="label"):
            client.reload(models_config.absolute_config(one_step, repo))
        assert served_version(server) == 1


def test_promote_killed_between_its_steps_leaves_a_config_that_still_serves_stable(repo: Path, tmp_path: Path) -> None:
    # A fake server that never reports version 2 AVAILABLE holds the promote between step 1 and step 2.
    fake = FakeModelService(repo, never_load={2})
    fake.boot(models_config.absolute_config(models_config.read_config(repo / "models.config"), repo))
    grpc_server, target = start_fake(fake)
    command = [sys.executable, "-m", "tlserve", "promote", "demo", "2", "--models-dir", str(repo),
               "--server", target, "--load-timeout", "600"]  # fmt: skip
    log_path = tmp_path / "promote.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 120
        while len(fake.accepted) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert len(fake.accepted) == 2, log_path.read_text()
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        grpc_server.stop(None)

    assert models_config.load_model(repo, "demo") == ServedModel("demo", "demo", (1, 2), {"stable": 1})
    assert audit.read_records(repo) == []
    # A model server (re)started on what the killed promote left behind accepts it and serves stable = 1.
    with running_model_server(repo) as server:
        assert served_version(server) == 1
        # ...and promoting again from that state completes the interrupted move.
        with ModelServerClient(server.target) as client:
            move_label(repo, "demo", 2, options=MoveOptions(server=client, drain_s=0, load_timeout_s=60))
        assert served_version(server) == 2


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None, reason="tensorflow_model_server not on PATH")
def test_promote_and_rollback_against_tensorflow_serving(repo: Path, tmp_path: Path) -> None:
    from tests.support.modelserver import free_port, stop_process, wait_until_available

    port = free_port()
    # TF Serving refuses relative base paths (ValidateModelConfigList): give it an absolute copy, as start.sh does.
    from tlserve.models_config import absolute_config, read_config, write_config

    startup_config = tmp_path / "models.config"
    write_config(startup_config, absolute_config(read_config(repo / "models.config"), repo))
    command = ["tensorflow_model_server", f"--port={port}", f"--model_config_file={startup_config}",
               "--file_system_poll_wait_seconds=1"]  # fmt: skip
    with (tmp_path / "tfserving.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        target = f"127.0.0.1:{port}"
        wait_until_available(target, "demo", version=1, timeout_s=120)
        with ModelServerClient(target) as client:
            options = MoveOptions(server=client, drain_s=0, load_timeout_s=120)
            move_label(repo, "demo", 2, options=options)
            assert tfserving_version(target) == 2
            rollback(repo, "demo", options=options)
            assert tfserving_version(target) == 1
    finally:
        stop_process(process)


def tfserving_version(target: str) -> int:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(IMAGES, "demo", version_label="stable"), timeout=30)
    return int(response.model_spec.version.value)
