"""models.config parsing (TF Serving's ModelServerConfig text proto), version policies and the models/ fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.modelserver.config import (
    aspired_versions,
    models_dir_config,
    parse_model_server_config,
    read_model_server_config,
    single_model_config,
)
from service.modelserver.errors import InvalidArgument


def model_config(policy: str = ""):
    text = f'model_config_list {{ config {{ name: "demo" base_path: "/models/demo" {policy} }} }}'
    return parse_model_server_config(text).model_config_list.config[0]


def test_relative_base_path_is_resolved_against_the_config_files_directory(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(
        'model_config_list { config { name: "a" base_path: "a" } config { name: "b" base_path: "/srv/b" } }'
    )
    models = read_model_server_config(path).model_config_list.config
    assert [m.base_path for m in models] == [str(tmp_path.resolve() / "a"), "/srv/b"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [5]),
        ("model_version_policy { latest { num_versions: 2 } }", [3, 5]),
        ("model_version_policy { all {} }", [1, 3, 5]),
        ("model_version_policy { specific { versions: 1 versions: 4 } }", [1]),
    ],
)
def test_version_policies_pick_tf_servings_versions(policy, expected):
    assert aspired_versions(model_config(policy), [1, 3, 5]) == expected


def test_model_listed_twice_is_rejected_with_tf_servings_message():
    text = 'model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }'
    with pytest.raises(InvalidArgument, match="Illegal to list model a multiple times in config list"):
        parse_model_server_config(text)


def test_syntax_error_is_invalid_argument_naming_the_field():
    with pytest.raises(InvalidArgument, match="base_pth"):
        parse_model_server_config('model_config_list { config { name: "a" base_pth: "/a" } }')


def test_label_outside_tf_servings_alphabet_is_rejected():
    text = 'model_config_list { config { name: "a" base_path: "/a" version_labels { key: "st-able" value: 1 } } }'
    with pytest.raises(InvalidArgument, match="st-able"):
        parse_model_server_config(text)


def test_models_dir_without_config_serves_every_visible_model_folder_with_a_version(tmp_path):
    for name in ("alpha", "beta", ".staging-x", "empty"):
        (tmp_path / name).mkdir()
    for name in ("alpha", "beta", ".staging-x"):
        (tmp_path / name / "1").mkdir()
    models = models_dir_config(tmp_path).model_config_list.config
    assert [(m.name, Path(m.base_path)) for m in models] == [
        ("alpha", tmp_path.resolve() / "alpha"),
        ("beta", tmp_path.resolve() / "beta"),
    ]


def test_models_dir_with_config_uses_it(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "models.config").write_text('model_config_list { config { name: "demo" base_path: "demo" } }')
    assert [m.name for m in models_dir_config(tmp_path).model_config_list.config] == ["demo"]


def test_single_model_flags_make_an_absolute_one_model_config(tmp_path):
    config = single_model_config("demo", tmp_path / "demo")
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path) == ("demo", str((tmp_path / "demo").resolve()))
