"""`tlserve serve` as a process: refuses bad starts with a one-line reason (exit 2), stops when its child dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import running_serve, subprocess_env
from tlserve.processes import LOOPBACK, free_ports

pytestmark = pytest.mark.e2e
STOP_BOUND_S = 60.0  # graceful gateway shutdown; bounds a hang, measures nothing


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tlserve", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False)


PORT_FLAGS = ["--http-port", "--grpc-port", "--model-server-port"]
PORT_RACE_ATTEMPTS = 3


@pytest.mark.parametrize("flag", PORT_FLAGS)
def test_serve_exits_2_when_a_port_is_busy(tmp_path, flag):
    for _attempt in range(PORT_RACE_ATTEMPTS):
        ports = dict(zip(PORT_FLAGS, free_ports(3), strict=True))
        with socket.socket() as busy:
            busy.bind((LOOPBACK, ports[flag]))
            busy.listen()
            result = run_serve("--models-dir", str(tmp_path), *(str(part) for item in ports.items() for part in item))
        # Another process may take one of the other ports between free_ports and the check (checked in flag order,
        # it would be named first): that is a race of this machine, not the behaviour under test; try fresh ports.
        others = {f"tlserve: error: port {port} ({other}) is already in use" for other, port in ports.items()}
        others.discard(f"tlserve: error: port {ports[flag]} ({flag}) is already in use")
        if (result.stderr.strip().splitlines() or [""])[-1] not in others:
            break
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"tlserve: error: port {ports[flag]} ({flag}) is already in use"


def test_serve_exits_2_without_models_dir(tmp_path):
    result = run_serve("--models-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"tlserve: error: models directory not found: {tmp_path / 'nowhere'}"


def test_serve_exits_2_on_malformed_upstream():
    result = run_serve("--upstream", "no-port-here")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tlserve: error: --upstream no-port-here: value error, expected HOST:PORT, dns:///HOST:PORT or "
        "ipv4:ADDR:PORT[,ADDR:PORT...], got 'no-port-here'"
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the child process")
def test_serve_stops_with_exit_2_when_its_model_server_dies(model_repo, tmp_path):
    with running_serve(model_repo(), log_path=tmp_path / "serve.log") as serving:
        pid = serving.process.pid
        (model_server_pid,) = (int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        os.kill(model_server_pid, signal.SIGKILL)
        assert serving.process.wait(STOP_BOUND_S) == 2
    assert "tlserve: error: the embedded model server exited with code -9" in serving.log_tail()


def test_serve_exits_2_with_one_line_on_a_bad_setting_flag(tmp_path):
    result = run_serve("--models-dir", str(tmp_path), "--canary-share", "2")
    assert result.returncode == 2
    assert result.stderr.strip() == "tlserve: error: --canary-share 2: input should be less than or equal to 1"
