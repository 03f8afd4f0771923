"""The neutral contract: version scanning as TF Serving's poller sees it, label and top-k rules."""

from __future__ import annotations

from pathlib import Path

from tlserve import contract


def test_only_canonical_integer_directories_are_versions(tmp_path: Path) -> None:
    for name in ("1", "2", "10", "0012", "v3", ".staging-abc", "7.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "11").write_text("a file, not a version directory")
    assert contract.list_versions(tmp_path) == [1, 2, 10]


def test_a_missing_model_directory_has_no_versions(tmp_path: Path) -> None:
    assert contract.list_versions(tmp_path / "absent") == []


def test_top_k_is_every_class_up_to_five() -> None:
    assert [contract.top_k_for(n) for n in (1, 3, 5, 8)] == [1, 3, 5, 5]


def test_labels_follow_tf_servings_pattern() -> None:
    assert contract.LABEL_PATTERN.match("stable_2")
    assert not contract.LABEL_PATTERN.match("canary-1")
    assert not contract.LABEL_PATTERN.match("")


def test_a_repository_without_models_config_serves_every_visible_folder_with_a_version(tmp_path: Path) -> None:
    for name in ("beta", "alpha", ".staging-x", "empty"):
        (tmp_path / name).mkdir()
    for name in ("alpha", "beta", ".staging-x"):
        (tmp_path / name / "1").mkdir()
    (tmp_path / "audit.jsonl").write_text("")

    assert [folder.name for folder in contract.unconfigured_model_folders(tmp_path)] == ["alpha", "beta"]
    assert contract.unconfigured_model_folders(tmp_path / "missing") == []


def test_promotion_and_the_model_server_agree_on_the_default_models(tmp_path: Path) -> None:
    from service.modelserver.config import models_dir_config
    from tlserve.models_config import model_names, read_repository_config

    for name in ("demo", "other", ".hidden", "empty"):
        (tmp_path / name).mkdir()
    for name in ("demo", "other", ".hidden"):
        (tmp_path / name / "3").mkdir()

    served = [model.name for model in models_dir_config(tmp_path).model_config_list.config]
    assert model_names(read_repository_config(tmp_path)) == served == ["demo", "other"]


def test_one_top_k_rule_refuses_booleans_strings_and_out_of_range() -> None:
    assert [contract.top_k_problem(value) for value in (1, 3, 5)] == [None, None, None]
    for value in (True, False, "3", 0, 6, 9, 2.5, None):
        assert contract.top_k_problem(value) == f"top_k must be an integer from 1 to 5, not {value!r}"
