"""The gateway image's install commands, exercised: the gateway's dependency set goes into a fresh virtual
environment exactly as the Dockerfile installs it, and `tlserve serve` starts from there.

Slow (about a minute of pip from the local caches); the one test that proves the image's requirement files are
enough to run the gateway, since no Docker engine is available to build the image itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.metric_names import GATEWAY_METRICS
from tests.deploy.tools import REPO_ROOT
from tests.support.gateway import ServeProcess
from tlserve.processes import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def gateway_build_sources() -> tuple[str, ...]:
    """What the Dockerfile's gateway-build stage copies (read from it, so the test follows the image)."""
    stage = (REPO_ROOT / "Dockerfile").read_text().split("AS gateway-build", 1)[1].split("\nFROM ", 1)[0]
    names: list[str] = []
    for match in re.finditer(r"^COPY (?!--from)(.+) \S+$", stage, flags=re.M):
        names += [name.rstrip("/") for name in match.group(1).split()]
    return tuple(names)


SOURCES = gateway_build_sources()

START_TIMEOUT_S = 180.0
INSTALL_TIMEOUT_S = 900.0


def clean_env() -> dict[str, str]:
    """This environment without anything that would let the repository's checkout leak into the venv."""
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def pip_install(python: Path, *args: str | Path, cwd: Path) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", *map(str, args)]
    result = subprocess.run(
        command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the gateway image's dependency set and tlserve itself."""
    root = tmp_path_factory.mktemp("gateway-image")
    source = root / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env(), timeout=120)
    python = venv / "bin" / "python"
    requirements = REPO_ROOT / "requirements"
    # The Dockerfile's gateway-deps and gateway-build stages, command for command.
    pip_install(python, "-r", requirements / "gateway.txt", cwd=root)
    pip_install(python, "--no-deps", "--no-build-isolation", source, cwd=root)
    return venv


@contextlib.contextmanager
def running_gateway(venv: Path, log_path: Path) -> Iterator[str]:
    """`tlserve serve --upstream <nothing listening>` from the venv; yields its HTTP URL once /healthz answers."""
    http_port, grpc_port, upstream_port = free_ports(3)
    command = [
        str(venv / "bin" / "tlserve"), "serve", "--upstream", f"127.0.0.1:{upstream_port}",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=log_path.parent, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
    gateway = ServeProcess(process, http_port, grpc_port, None, log_path)
    try:
        gateway.wait_ready(START_TIMEOUT_S, route="/healthz")
        yield gateway.http_url
    finally:
        if gateway.stop(30) == -signal.SIGKILL:
            pytest.fail(f"tlserve serve ignored SIGTERM for 30 s:\n{gateway.log_tail()}")


def test_gateway_dependency_set_is_a_real_fresh_install(gateway_venv: Path) -> None:
    config = (gateway_venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in config
    probe = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-c", "import service, tlserve; print(service.__file__)"],
        cwd=gateway_venv, env=clean_env(), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert probe.stdout.strip().startswith(str(gateway_venv))
    site_packages = next((gateway_venv / "lib").glob("python3*/site-packages"))
    # Training-only dependencies (runtime.txt) stay out of the gateway image, TensorFlow and Keras included.
    for package in ("matplotlib", "tensorflow", "keras", "tensorflow_serving"):
        assert not (site_packages / package).exists(), package


def test_gateway_from_fresh_venv_is_alive_but_not_ready_without_upstream(gateway_venv: Path, tmp_path: Path) -> None:
    with running_gateway(gateway_venv, tmp_path / "serve.log") as url:
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        readyz = httpx.get(f"{url}/readyz", timeout=30)
        assert readyz.status_code == 503
        metrics = httpx.get(f"{url}/metrics", timeout=30)
        assert metrics.status_code == 200
        # The page (package data service/gateway/http/static) and Swagger UI's assets are in the installed package.
        page = httpx.get(f"{url}/", timeout=30)
        assert page.status_code == 200
        assert "Try a prediction" in page.text
        assert httpx.get(f"{url}/docs/assets/swagger-ui-bundle.js", timeout=30).status_code == 200
    exported = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics.text, flags=re.MULTILINE):
        exported.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
    # The names the dashboard and alert rules query (tests/deploy/metric_names.py) are really exported.
    assert set(GATEWAY_METRICS) <= exported
