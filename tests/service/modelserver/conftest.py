"""Fixtures for the model server tests: model repositories built from the session's exported version."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

RepoFactory = Callable[..., Path]


def copy_versions(exported_version: Path, models_dir: Path, name: str, versions: tuple[int, ...]) -> Path:
    for version in versions:
        shutil.copytree(exported_version, models_dir / name / str(version))
    return models_dir


@pytest.fixture(scope="module")
def module_repo(tmp_path_factory: pytest.TempPathFactory, exported_version: Path) -> RepoFactory:
    """models/ directories that live for one test module (servers started once per module use them)."""

    def make(name: str = "demo", versions: tuple[int, ...] = (1,), config: str | None = None) -> Path:
        models_dir = copy_versions(exported_version, tmp_path_factory.mktemp("models"), name, versions)
        if config is not None:
            (models_dir / "models.config").write_text(config)
        return models_dir

    return make
