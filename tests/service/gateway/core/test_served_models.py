"""Which models a repository serves, as the gateway reads it (models.config parsed with the TF-free protos)."""

from __future__ import annotations

import os
from pathlib import Path

from service.gateway.core.served_models import repository_models


def write_config(models_dir: Path, names: list[str]) -> None:
    """Atomic rewrite, as the promotion tools do it (write + rename)."""
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{name}" model_platform: "tensorflow" }}\n' for name in names
    )
    staged = models_dir / "models.config.tmp"
    staged.write_text(f"# written by a test\nmodel_config_list {{\n{entries}}}\n", encoding="utf-8")
    os.replace(staged, models_dir / "models.config")


def test_a_rewritten_models_config_is_seen_at_once(tmp_path):
    write_config(tmp_path, ["pets"])
    assert repository_models(tmp_path) == ("pets",)
    write_config(tmp_path, ["pets", "flowers"])
    assert repository_models(tmp_path) == ("pets", "flowers")


def test_a_config_the_model_server_would_refuse_serves_nothing(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list { config { nmae: 'pets' } }\n", encoding="utf-8")
    assert repository_models(tmp_path) == ()


def test_without_models_config_the_folders_with_a_version_are_served(tmp_path):
    (tmp_path / "pets" / "1").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / ".staging-x" / "1").mkdir(parents=True)
    assert repository_models(tmp_path) == ("pets",)
