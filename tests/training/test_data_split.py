"""The split: a hash of each relative path, stable as the data grows, never leaking identical bytes across splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import encode_image
from training.data import DatasetError, scan_dataset
from training.data.split import assign_splits, resolve_given_splits, split_for_path

VAL, TEST = 0.2, 0.2
paths = st.text(alphabet="abcdefgh/_.", min_size=1, max_size=12)
contents = st.integers(0, 40).map(lambda n: f"sha-{n}")  # few values: plenty of duplicates
datasets = st.dictionaries(paths, contents, max_size=40)


def _pairs(files: dict[str, str]) -> list[tuple[str, str]]:
    return list(files.items())


@settings(max_examples=200, deadline=None)
@given(existing=datasets, added=datasets)
def test_adding_files_with_new_content_never_moves_an_existing_file(existing, added) -> None:
    fresh = {path: f"new-{content}" for path, content in added.items() if path not in existing}
    before, _ = assign_splits(_pairs(existing), VAL, TEST)
    after, _ = assign_splits(_pairs(existing | fresh), VAL, TEST)
    assert {path: after[path] for path in existing} == before


@settings(max_examples=200, deadline=None)
@given(existing=datasets, added=datasets)
def test_an_existing_file_moves_only_when_a_copy_with_an_earlier_path_arrives(existing, added) -> None:
    grown = existing | {path: content for path, content in added.items() if path not in existing}
    before, _ = assign_splits(_pairs(existing), VAL, TEST)
    after, _ = assign_splits(_pairs(grown), VAL, TEST)
    for path, content in existing.items():
        if after[path] != before[path]:
            first_copy = min(other for other, same in grown.items() if same == content)
            assert first_copy not in existing  # the group's anchor changed: only then may it move


@settings(max_examples=200, deadline=None)
@given(files=datasets)
def test_identical_bytes_never_land_in_two_splits(files) -> None:
    splits, duplicates = assign_splits(_pairs(files), VAL, TEST)
    split_of_content: dict[str, set[str]] = {}
    for path, content in files.items():
        split_of_content.setdefault(content, set()).add(splits[path])
    assert all(len(found) == 1 for found in split_of_content.values())
    assert len(duplicates) == len(files) - len(split_of_content)


@settings(max_examples=200, deadline=None)
@given(files=datasets, given_split=st.lists(st.sampled_from(["train", "val", "test"]), min_size=40, max_size=40))
def test_given_splits_drop_copies_from_the_later_split(files, given_split) -> None:
    given = {path: given_split[index] for index, path in enumerate(files)}
    duplicates, leaked = resolve_given_splits(_pairs(files), given)
    kept: dict[str, set[str]] = {}
    for path, content in files.items():
        if path not in leaked:
            kept.setdefault(content, set()).add(given[path])
    assert all(len(found) == 1 for found in kept.values())
    assert set(kept) == set(files.values())  # every content keeps at least one copy
    assert all(given[duplicates[path]] == given[path] for path in duplicates)
    assert not set(duplicates) & set(leaked)


def test_fractions_are_respected_on_many_paths() -> None:
    splits = [split_for_path(f"class/{index}.jpg", 0.15, 0.15) for index in range(4000)]
    assert abs(splits.count("val") / 4000 - 0.15) < 0.03
    assert abs(splits.count("test") / 4000 - 0.15) < 0.03


def test_bad_fractions_are_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="sum below 1"):
        scan_dataset(tmp_path, val_fraction=0.5, test_fraction=0.5, progress=False)


def _image(seed: int) -> bytes:
    return encode_image(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel_path, data in files.items():
        (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (root / rel_path).write_bytes(data)


def test_rescanning_a_grown_dataset_keeps_every_old_file_in_its_split(tmp_path: Path) -> None:
    _write_tree(
        tmp_path,
        {
            f"{label}/{index}.png": _image(index * 2 + label_index)
            for label_index, label in enumerate(("a", "b"))
            for index in range(30)
        },
    )
    before = {record.rel_path: record.split for record in scan_dataset(tmp_path, progress=False).records}
    _write_tree(tmp_path, {f"a/new{index}.png": _image(1000 + index) for index in range(30)})
    after = {record.rel_path: record.split for record in scan_dataset(tmp_path, progress=False).records}
    assert {path: after[path] for path in before} == before
    assert len(after) == 90
    assert set(before.values()) == {"train", "val", "test"}


def test_train_val_test_folders_are_used_as_given(tmp_path: Path) -> None:
    _write_tree(
        tmp_path,
        {
            "train/cat/1.png": _image(1),
            "train/dog/2.png": _image(2),
            "validation/cat/3.png": _image(3),
            "test/dog/4.png": _image(4),
            "test/cat/copy-of-train.png": _image(1),
        },
    )
    scan = scan_dataset(tmp_path, progress=False)
    assert scan.given_splits
    assert scan.classes == ["cat", "dog"]
    assert {record.rel_path: record.split for record in scan.records} == {
        "train/cat/1.png": "train",
        "train/dog/2.png": "train",
        "validation/cat/3.png": "val",
        "test/dog/4.png": "test",
    }
    assert [(bad.rel_path, bad.reason) for bad in scan.bad] == [
        ("test/cat/copy-of-train.png", "duplicate across splits (same bytes as train/cat/1.png)"),
    ]
    assert scan.duplicates == []  # the only copy left the dataset; nothing is "kept beside its twin"


def test_a_class_named_test_is_not_mistaken_for_a_split(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"test/1.png": _image(1), "other/2.png": _image(2)})
    scan = scan_dataset(tmp_path, progress=False)
    assert not scan.given_splits
    assert scan.classes == ["other", "test"]


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"a/1.png": _image(1), "b/2.png": _image(2)})
    first = scan_dataset(tmp_path, progress=False).fingerprint
    assert scan_dataset(tmp_path, progress=False).fingerprint == first
    (tmp_path / "b/2.png").write_bytes(_image(3))
    assert scan_dataset(tmp_path, progress=False).fingerprint != first
