"""Real processes: versions dropped into models/ are served without a restart; a broken one never takes over."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import random_images
from tests.e2e.conftest import MODEL_NAME, copy_version, predict_version
from tlserve.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The model server polls models/ every second (TF Serving's default); loading a VGG16 copy adds a few more.
SWITCH_TIMEOUT_S = 120.0


def wait_for_version(gateway, image: bytes, version: int) -> list[int]:
    """Ask until `version` answers; returns every version seen on the way (each request must succeed)."""
    seen: list[int] = []

    def answers_with_version() -> bool:
        seen.append(predict_version(gateway, image))
        return seen[-1] == version

    what, saw = f"version {version} served", lambda: f"saw {sorted(set(seen))}"
    wait_until(answers_with_version, timeout_s=SWITCH_TIMEOUT_S, what=what, interval_s=0.3, details=saw)
    return seen


def version_states(gateway) -> dict[int, dict]:
    """The model's versions as TF Serving's REST status route lists them: {version: {state, status}}."""
    response = httpx.get(f"{gateway.http_url}/v1/models/{MODEL_NAME}", timeout=30)
    assert response.status_code == 200, response.text
    return {int(entry["version"]): entry for entry in response.json()["model_version_status"]}


def failed_to_load(entry: dict | None) -> bool:
    """A version the server tried and gave up on: state END with an error status."""
    if entry is None or entry["state"] != "END":
        return False
    return entry.get("status", {}).get("error_code", "OK") not in ("OK", 0)


def test_new_version_is_served_without_restart_and_broken_one_never_replaces_it(gateway, exported_version):
    models_dir = gateway.models_dir
    image = random_images(1, seed=21)[0]
    assert predict_version(gateway, image) == 1
    pid = gateway.process.pid

    copy_version(exported_version, models_dir, 2)
    seen = wait_for_version(gateway, image, 2)
    assert set(seen) <= {1, 2}

    broken = models_dir / MODEL_NAME / ".staging-3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    broken.rename(models_dir / MODEL_NAME / "3")

    # Version 2 answers every request until the server has tried version 3 and given up on it, and after.
    def version_3_failed_while_2_answers() -> bool:
        assert predict_version(gateway, image) == 2
        return failed_to_load(version_states(gateway).get(3))

    what = "version 3 failed to load"
    wait_until(
        version_3_failed_while_2_answers,
        timeout_s=SWITCH_TIMEOUT_S,
        what=what,
        interval_s=0.3,
        details=gateway.log_tail,
    )
    assert [predict_version(gateway, image) for _ in range(3)] == [2, 2, 2]

    states = version_states(gateway)
    assert states[2]["state"] == "AVAILABLE"
    assert states.get(3, {}).get("state") != "AVAILABLE"
    assert gateway.process.pid == pid
    assert gateway.process.poll() is None


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def accepts_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the child process")
def test_sigterm_stops_the_gateway_and_its_model_server_child(gateway):
    if gateway.model_server_port is None:
        pytest.skip("this gateway proxies an external model server; there is no child to stop")
    (model_server_pid,) = child_pids(gateway.process.pid)
    assert accepts_connections(gateway.model_server_port)

    assert gateway.stop() == 0
    assert not Path(f"/proc/{model_server_pid}").exists()
    assert not accepts_connections(gateway.model_server_port)
