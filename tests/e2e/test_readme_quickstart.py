"""The README's "Use it on your own images" blocks, run as a newcomer would, with `--weights none` added to
`tlserve train` (ImageNet is unreachable here) and the gateway on free ports instead of 8000/8500/8600."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import running_serve, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Use it on your own images"


def readme_commands() -> list[str]:
    """Every command of the section's bash blocks, in order, without its trailing comment."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines]


def test_the_readme_section_has_the_commands_this_test_runs() -> None:
    verbs = [" ".join(command.split()[:2]) for command in readme_commands()]
    assert verbs == ["tlserve data", "tlserve train", "tlserve serve", "tlserve predict", "curl -F",
                     "tlserve train", "tlserve models", "tlserve promote"]  # fmt: skip


@pytest.mark.slow
def test_readme_quickstart_works_verbatim_with_weights_none(tmp_path: Path) -> None:
    from tests.conftest import encode_image
    from training.data.sample import SampleSpec, write_sample

    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    # models/ as a fresh clone has it (only the tracked files): the README's commands run in the clone.
    for tracked in tracked_files("models"):
        (work / tracked).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / tracked, work / tracked)
    write_sample(home / "PetImages", SampleSpec(classes=2, per_class=8, size=64, seed=3))
    pixels = next((home / "PetImages").rglob("*.png")).read_bytes()
    (work / "cat.jpg").write_bytes(encode_image(_pixels_of(pixels), "JPEG"))
    (work / "dog.png").write_bytes(pixels)
    path = f"{Path(sys.executable).parent}:{subprocess_env()['PATH']}"
    env = {"HOME": str(home), "PATH": path, "TLSERVE_MODELS_DIR": str(work / "models")}

    def sh(command: str, **extra: str) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=subprocess_env({**env, **extra}),
                              capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    check, train, serve, predict, curl, retrain, show, promote = readme_commands()
    sh(check)
    assert "live: pets stable -> 1" in sh(f"{train} --weights none")
    assert serve == "tlserve serve"
    # Ready as a newcomer (or Kubernetes) would see it: /readyz is 200 once pets, the only model, is AVAILABLE.
    with running_serve(work / "models", env=env, ready_route="/readyz") as gateway:
        ask = {"TLSERVE_MODEL_SERVER": gateway.model_server_target}

        def localize(command: str) -> str:
            return command.replace("http://localhost:8000", gateway.http_url)

        assert "pets" in sh(localize(predict))
        assert json.loads(sh(localize(curl)))["version"] == 1

        assert "candidate: unpinned traffic stays on stable version 1" in sh(f"{retrain} --weights none")
        assert json.loads(sh(localize(curl)))["version"] == 1, "a published candidate must take no unpinned traffic"
        assert re.search(r"^\s+1\s+yes\s+stable", sh(show, **ask), re.MULTILINE)
        assert "pets: stable 1 -> 2" in sh(promote, **ask)
        assert json.loads(sh(localize(curl)))["version"] == 2


def tracked_files(folder: str) -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", folder], capture_output=True, text=True, check=True
    )
    files = listed.stdout.split()
    assert files, f"git tracks nothing under {folder}/"
    return files


def _pixels_of(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
