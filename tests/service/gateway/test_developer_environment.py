"""The suite ignores the developer's TLSERVE_* environment (tests/conftest.py `without_tlserve_environment`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
# A gateway test that builds its Settings from the environment and expects no API keys (auth off).
SETTINGS_BUILDING_TEST = (
    "tests/service/gateway/http/test_predict.py::test_predict_multipart_answers_each_image_in_order"
)


def test_no_tlserve_variable_reaches_a_test():
    assert [name for name in os.environ if name.startswith("TLSERVE_")] == []


def test_a_settings_building_test_sees_no_keys(client):
    assert client.app.state.settings.api_keys == ()
    assert client.post("/predict", json={"instances": []}).status_code != 401


@pytest.mark.slow
def test_an_exported_api_key_does_not_turn_gateway_tests_into_401s():
    env = {
        **os.environ,
        "TLSERVE_API_KEYS": "developer-key",
        "TLSERVE_DEFAULT_TOP_K": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, SETTINGS_BUILDING_TEST], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout
