"""Dockerfile: hadolint clean, and the images install dependencies the way the Makefile does."""

from __future__ import annotations

import re

import pytest

from tests.deploy.tools import REPO_ROOT, find_tool, run

DOCKERFILE = REPO_ROOT / "Dockerfile"


def stages() -> dict[str, str]:
    """Stage name → its instructions (the text up to the next FROM)."""
    parts = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[-1].strip(): part for part in parts}


def test_hadolint_finds_nothing() -> None:
    run([find_tool("hadolint"), "--failure-threshold", "info", DOCKERFILE])


def test_hadolint_would_catch_a_problem(tmp_path) -> None:
    """Guards the check above: a root-user, shell-form image must fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install fastapi\nCMD tlserve serve\n")
    with pytest.raises(pytest.fail.Exception, match=r"DL3013|DL3025"):
        run([find_tool("hadolint"), "--failure-threshold", "info", bad])


def test_gateway_is_the_default_target_and_runs_unprivileged() -> None:
    all_stages = stages()
    assert list(all_stages)[-1] == "gateway"
    gateway = all_stages["gateway"]
    assert "USER 10001:10001" in gateway
    assert 'CMD ["serve", "--http-port", "8000", "--grpc-port", "8500"]' in gateway
    assert 'ENTRYPOINT ["tlserve"]' in gateway
    healthcheck = gateway[gateway.index("HEALTHCHECK") :]
    assert "CMD [" in healthcheck
    assert "/healthz" in healthcheck
    assert "EXPOSE 8000 8500" in gateway


def test_trainer_runs_unprivileged_with_gpu_tensorflow() -> None:
    all_stages = stages()
    assert "USER 10001:10001" in all_stages["trainer"]
    deps = all_stages["trainer-deps"]
    assert '"tensorflow[and-cuda]==${tf_version}"' in deps
    assert "sed -n 's/^tensorflow-cpu==//p' requirements/runtime.txt" in deps
    assert "pip install --no-deps -r requirements/no-deps.txt" in deps
    # The swap works because only runtime.txt names the CPU wheel; the gateway's thin set has no TensorFlow.
    requirements = {path.name: path.read_text() for path in (REPO_ROOT / "requirements").glob("*.txt")}
    assert "-r gateway.txt" in requirements["runtime.txt"]
    assert [name for name, text in requirements.items() if "tensorflow-cpu==" in text] == ["runtime.txt"]


def test_images_install_with_the_makefile_commands() -> None:
    """One source of truth: the requirement files and pip flags are the Makefile's (the gateway set for the gateway)."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "pip install --quiet --no-deps -r requirements/no-deps.txt" in makefile
    assert "--no-deps --no-build-isolation" in makefile
    gateway_deps = stages()["gateway-deps"]
    assert "pip install -r requirements/gateway.txt" in gateway_deps
    assert "no-deps.txt" not in gateway_deps  # the thin set: no tensorflow-serving-api, hence no TensorFlow
    for name in ("gateway-build", "trainer-build"):
        assert "pip install --no-deps --no-build-isolation ." in stages()[name]
    # Dependencies are installed before the source is copied (cached layers survive code changes).
    text = DOCKERFILE.read_text()
    assert text.index("requirements/gateway.txt \\") < text.index("COPY tlserve/ tlserve/")


def test_dockerignore_sends_only_what_the_images_install() -> None:
    rules = (REPO_ROOT / ".dockerignore").read_text().split()
    assert rules[rules.index("**") + 1 :][:1] == ["!requirements/"]
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE))
    for source in copied:
        assert f"!{source}" in rules, f"COPY {source} is excluded by .dockerignore"
