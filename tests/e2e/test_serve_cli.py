"""`tlserve serve` as a process: refuses bad starts with a one-line reason (exit 2); supervision: test_supervision."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support.gateway import subprocess_env
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


def test_serve_exits_2_with_one_line_on_a_bad_setting_flag(tmp_path):
    result = run_serve("--models-dir", str(tmp_path), "--canary-share", "2")
    assert result.returncode == 2
    assert result.stderr.strip() == "tlserve: error: --canary-share 2: input should be less than or equal to 1"
