"""models.config read/write: round trips, atomic replacement, TF Serving's rules, base path resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlserve import models_config
from tlserve.models_config import ModelsConfigError, ServedModel


def make_versions(models_dir: Path, name: str, versions: tuple[int, ...]) -> None:
    for version in versions:
        (models_dir / name / str(version)).mkdir(parents=True)


def test_saved_model_entry_reads_back_with_versions_and_labels(tmp_path: Path) -> None:
    model = ServedModel("demo", "demo", (1, 2), {"stable": 1, "canary": 2})
    models_config.save_model(tmp_path, model)

    assert models_config.load_model(tmp_path, "demo") == model
    text = (tmp_path / "models.config").read_text()
    assert "specific" in text
    assert 'key: "canary"' in text


def test_saving_one_model_keeps_the_other_models_entries(tmp_path: Path) -> None:
    models_config.save_model(tmp_path, ServedModel("a", "/abs/a", (3,), {"stable": 3}))
    models_config.save_model(tmp_path, ServedModel("b", "b", (1,)))
    models_config.save_model(tmp_path, ServedModel("b", "b", (1, 2), {"stable": 2}))

    config = models_config.read_config(tmp_path / "models.config")
    assert models_config.model_names(config) == ["a", "b"]
    assert models_config.get_model(config, "a") == ServedModel("a", "/abs/a", (3,), {"stable": 3})


def test_first_config_lists_every_model_folder_like_the_servers_default(tmp_path: Path) -> None:
    make_versions(tmp_path, "cats", (1,))
    make_versions(tmp_path, "dogs", (1, 2))
    models_config.save_model(tmp_path, ServedModel("dogs", "dogs", (2,), {"stable": 2}))

    config = models_config.read_config(tmp_path / "models.config")
    assert models_config.model_names(config) == ["cats", "dogs"]
    assert models_config.get_model(config, "cats") == ServedModel("cats", "cats")


def test_label_on_a_version_the_entry_does_not_serve_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelsConfigError, match="does not serve"):
        models_config.save_model(tmp_path, ServedModel("demo", "demo", (1,), {"stable": 2}))
    assert not (tmp_path / "models.config").exists()


def test_label_with_illegal_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelsConfigError, match="must match"):
        models_config.save_model(tmp_path, ServedModel("demo", "demo", (1,), {"new-stable": 1}))


def test_unknown_model_without_versions_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsConfigError, match="no model 'ghost'"):
        models_config.load_model(tmp_path, "ghost")


def test_unparseable_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "models.config").write_text("model_config_list { config { nonsense: 1 } }")
    with pytest.raises(ModelsConfigError, match="not a valid ModelServerConfig"):
        models_config.load_model(tmp_path, "demo")


def test_write_replaces_by_rename_and_leaves_no_temp_files(tmp_path: Path) -> None:
    models_config.save_model(tmp_path, ServedModel("demo", "demo", (1,)))
    inode_before = os.stat(tmp_path / "models.config").st_ino
    models_config.save_model(tmp_path, ServedModel("demo", "demo", (1, 2)))

    assert os.stat(tmp_path / "models.config").st_ino != inode_before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models.config"]


def test_failed_write_keeps_the_old_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models_config.save_model(tmp_path, ServedModel("demo", "demo", (1,), {"stable": 1}))
    before = (tmp_path / "models.config").read_text()

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        models_config.save_model(tmp_path, ServedModel("demo", "demo", (1, 2), {"stable": 2}))

    assert (tmp_path / "models.config").read_text() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models.config"]


def test_relative_base_path_resolves_beside_the_config_and_absolute_stays(tmp_path: Path) -> None:
    config_file = tmp_path / "models.config"
    assert models_config.resolve_base_path(config_file, "demo") == tmp_path / "demo"
    assert models_config.resolve_base_path(config_file, "/models/demo") == Path("/models/demo")

    config = models_config.put_model(models_config.read_config(config_file), ServedModel("demo", "demo", (1,)))
    absolute = models_config.absolute_config(config, Path("/srv/models"))
    assert absolute.model_config_list.config[0].base_path == "/srv/models/demo"
    assert config.model_config_list.config[0].base_path == "demo"


def test_absolute_config_leaves_object_storage_uris_alone(tmp_path: Path) -> None:
    config = models_config.read_config(tmp_path / "models.config")
    config = models_config.put_model(config, ServedModel("remote", "gs://bucket/remote", (1,)))
    absolute = models_config.absolute_config(config, Path("/srv/models"))
    assert absolute.model_config_list.config[0].base_path == "gs://bucket/remote"


def test_written_config_is_accepted_by_the_model_servers_parser(tmp_path: Path) -> None:
    from service.modelserver.config import read_model_server_config

    make_versions(tmp_path, "demo", (1, 2))
    models_config.save_model(tmp_path, ServedModel("demo", "demo", (1, 2), {"stable": 1, "canary": 2}))

    parsed = read_model_server_config(tmp_path / "models.config")
    entry = parsed.model_config_list.config[0]
    assert Path(entry.base_path) == (tmp_path / "demo").resolve()
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}
