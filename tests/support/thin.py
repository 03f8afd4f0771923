"""Run a real `tlserve` (or Python) child in which TensorFlow, Keras and tensorflow_serving cannot be imported."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
THIN_SITE = Path(__file__).resolve().parent / "thin_site"


def thin_env(log_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child whose own process fails on heavy imports and logs each attempt to `log_path`."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(THIN_SITE), str(REPO), *filter(None, [env.get("PYTHONPATH", "")])])
    env["TLSERVE_BLOCK_HEAVY_IMPORTS"] = str(log_path)
    log_path.touch()
    return env


def attempted_heavy_imports(log_path: Path) -> list[str]:
    return log_path.read_text(encoding="utf-8").splitlines() if log_path.exists() else []


def tlserve_command() -> list[str]:
    """The installed `tlserve` console script next to this interpreter (the real CLI), else `python -m tlserve`."""
    script = Path(sys.executable).with_name("tlserve")
    if script.is_file():
        return [str(script)]
    found = shutil.which("tlserve")
    return [found] if found else [sys.executable, "-m", "tlserve"]


def thin_overrides(log_path: Path) -> dict[str, str]:
    """The variables `thin_env` changes, for helpers that build the rest of the environment themselves."""
    env = thin_env(log_path, base={})
    return {key: env[key] for key in ("PYTHONPATH", "TLSERVE_BLOCK_HEAVY_IMPORTS")}
