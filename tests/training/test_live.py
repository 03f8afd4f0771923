"""Published is not live: a model's first version becomes stable, later ones are candidates until promoted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.modelserver.config import aspired_versions
from tlserve.cli import main
from tlserve.models_config import config_path, get_model, read_config
from training.publish import publish_exported

from .test_cli import SMALL_FLAGS


def served_entry(models_dir: Path, name: str):
    """The models.config entry for `name` (as the model servers read it) and the versions it makes them load."""
    config = read_config(config_path(models_dir))
    [entry] = [item for item in config.model_config_list.config if item.name == name]
    on_disk = sorted(int(child.name) for child in (models_dir / name).iterdir() if child.name.isdigit())
    return entry, aspired_versions(entry, on_disk)


def test_first_published_version_becomes_stable(tmp_path: Path, exported_version: Path) -> None:
    models_dir = tmp_path / "models"
    assert publish_exported(exported_version, models_dir, "pets") == 1
    entry, aspired = served_entry(models_dir, "pets")
    assert dict(entry.version_labels) == {"stable": 1}
    assert aspired == [1]


def test_later_versions_are_published_as_candidates_the_servers_do_not_load(
    tmp_path: Path, exported_version: Path
) -> None:
    models_dir = tmp_path / "models"
    publish_exported(exported_version, models_dir, "pets")
    assert publish_exported(exported_version, models_dir, "pets") == 2
    entry, aspired = served_entry(models_dir, "pets")
    assert dict(entry.version_labels) == {"stable": 1}, "publishing must not move stable"
    # Not loaded, so neither `stable` nor the gateway's "newest served version" fallback can reach version 2.
    assert aspired == [1]


def test_publishing_to_a_model_served_without_labels_pins_the_served_version_first(
    model_repo, exported_version: Path
) -> None:
    models_dir = model_repo("pets", versions=(1,))  # published before labels existed: no models.config at all
    assert publish_exported(exported_version, models_dir, "pets") == 2
    entry, aspired = served_entry(models_dir, "pets")
    assert dict(entry.version_labels) == {"stable": 1}
    assert aspired == [1], "a `latest` policy would have switched unpinned traffic to version 2"


def test_publishing_keeps_other_models_of_a_repository_without_config_served(
    model_repo, exported_version: Path
) -> None:
    models_dir = model_repo("cats", versions=(1, 2))
    publish_exported(exported_version, models_dir, "pets")
    config = read_config(config_path(models_dir))
    cats = get_model(config, "cats")
    assert cats is not None, "writing models.config must not drop a model the servers served from the folder"


@pytest.mark.slow
def test_train_promote_offline_makes_the_new_version_live(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.data.sample import SampleSpec, write_sample

    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=6, size=36, seed=2))
    argv = ["train", str(tmp_path / "data"), "--name", "pets", "--models-dir", str(tmp_path / "models")]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--json", *SMALL_FLAGS]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["version"], first["stable"], first["live"]) == (1, 1, True)

    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["version"], second["stable"], second["live"]) == (2, 1, False)

    assert main([*argv, "--promote", "--offline"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert (third["version"], third["stable"], third["live"]) == (3, 3, True)
    entry, aspired = served_entry(tmp_path / "models", "pets")
    assert dict(entry.version_labels) == {"stable": 3}
    assert aspired == [3]
