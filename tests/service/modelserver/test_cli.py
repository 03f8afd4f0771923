"""`tlserve model-server` as a real process: ready line, TF Serving client calls, env settings, clean SIGTERM exit."""

from __future__ import annotations

import subprocess
import sys

import tensorflow as tf

from tests.conftest import random_images
from tests.support.modelserver import (
    READY_PATTERN,
    model_server_process,
    predict_request,
    stop_process,
    wait_until_available,
)


def test_model_server_process_serves_and_stops_cleanly_on_sigterm(module_repo, tmp_path):
    models_dir = module_repo(versions=(1,))
    with model_server_process(models_dir, tmp_path / "server.log", wait_for_model="demo") as server:
        assert wait_until_available(server.target, "demo", version=1) == 1
        response = server.prediction_stub().Predict(predict_request(random_images(2)), timeout=30)
        assert tf.make_ndarray(response.outputs["probabilities"]).shape == (2, 3)
        assert server.process is not None
        assert stop_process(server.process) == 0
    log = (tmp_path / "server.log").read_text()
    assert "warmed up demo version 1 with 4 requests" in log  # 3 single-image records + 1 batch of 3
    assert "demo version 1 is AVAILABLE" in log
    assert "unloaded demo version 1" in log


def test_env_settings_reach_the_process_and_given_flags_win(tmp_path, monkeypatch):
    # As `tlserve serve` starts its child: --models-dir/--port given, everything else from the inherited env.
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_ENABLE_BATCHING", "true")
    monkeypatch.setenv("TLSERVE_MODEL_SERVER_PORT", "1")  # the helper's --port 0 must win
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    with model_server_process(models_dir, tmp_path / "server.log") as server:
        assert server.port not in (0, 1)
        assert server.process is not None
        assert stop_process(server.process) == 0
    assert "server-side batching on" in (tmp_path / "server.log").read_text()


def test_ready_line_is_the_documented_format():
    from service.modelserver.cli import READY_LINE

    assert READY_PATTERN.fullmatch(READY_LINE.format(host="127.0.0.1", port=8600))


def test_unreadable_config_file_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tlserve", "model-server", "--model-config-file", str(tmp_path / "missing.config")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"tlserve: error: cannot read model config file {tmp_path / 'missing.config'}: No such file or directory"
    ]
