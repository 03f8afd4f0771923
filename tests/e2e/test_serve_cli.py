"""`tlserve serve` refuses to start with a one-line reason and exit code 2 (no model is loaded for these)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support.gateway import LOOPBACK, free_ports, subprocess_env

pytestmark = pytest.mark.e2e


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tlserve", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False)


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--model-server-port"])
def test_serve_exits_2_when_a_port_is_busy(tmp_path, flag):
    ports = dict(zip(["--http-port", "--grpc-port", "--model-server-port"], free_ports(3), strict=True))
    with socket.socket() as busy:
        busy.bind((LOOPBACK, ports[flag]))
        busy.listen()
        result = run_serve("--models-dir", str(tmp_path), *(str(part) for item in ports.items() for part in item))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"tlserve: error: port {ports[flag]} ({flag}) is already in use"


def test_serve_exits_2_without_models_dir(tmp_path):
    result = run_serve("--models-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"tlserve: error: models directory not found: {tmp_path / 'nowhere'}"


def test_serve_exits_2_on_malformed_upstream():
    result = run_serve("--upstream", "no-port-here")
    assert result.returncode == 2
    assert result.stderr.strip() == "tlserve: error: expected HOST:PORT, got 'no-port-here'"
