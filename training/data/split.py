"""Deterministic train/val/test split by a hash of each file's relative path, with content duplicates kept together.

A file's split depends only on its own relative path (SHA-256 → a number in [0, 1) → a bucket), so adding files
never moves an existing one and the holdout stays a holdout when the data grows. Files with identical bytes all
follow the split of the lexicographically first path among them; hence adding a file moves an existing one only
when the new file has the same bytes *and* a path that sorts first (then the whole group moves together: leakage
is impossible, stability is kept for everything else). With train/val/test folders given on disk, a copy of a
training file found in val or test (or of a val file in test) is excluded from the evaluation split instead.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

SPLITS = ("train", "val", "test")
_SPLIT_PRIORITY = {name: rank for rank, name in enumerate(SPLITS)}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ValueError unless both fractions are in [0, 1) and leave something to train on."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction}: each must be in [0, 1), sum below 1"
        )


def path_fraction(rel_path: str) -> float:
    """A uniform number in [0, 1) fixed forever by the relative path alone."""
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for_path(rel_path: str, val_fraction: float, test_fraction: float) -> str:
    fraction = path_fraction(rel_path)
    if fraction < test_fraction:
        return "test"
    if fraction < test_fraction + val_fraction:
        return "val"
    return "train"


def group_by_content(files: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Content hash → the sorted relative paths holding those bytes."""
    groups: dict[str, list[str]] = defaultdict(list)
    for rel_path, sha256 in files:
        groups[sha256].append(rel_path)
    return {sha256: sorted(paths) for sha256, paths in groups.items()}


def assign_splits(
    files: Sequence[tuple[str, str]], val_fraction: float, test_fraction: float
) -> tuple[dict[str, str], dict[str, str]]:
    """(rel_path, sha256) pairs → (split of every path, duplicate path → the first path with the same bytes)."""
    check_fractions(val_fraction, test_fraction)
    splits: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for paths in group_by_content(files).values():
        anchor = paths[0]
        split = split_for_path(anchor, val_fraction, test_fraction)
        for rel_path in paths:
            splits[rel_path] = split
            if rel_path != anchor:
                duplicates[rel_path] = anchor
    return splits, duplicates


def resolve_given_splits(
    files: Sequence[tuple[str, str]], given: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """With splits given on disk: (duplicate kept in the same split → its first copy, leaked copy → the kept path).

    Within a content group the copies in the earliest split (train, then val, then test) are kept; copies in a
    later split leak the training data into evaluation and must be dropped.
    """
    duplicates: dict[str, str] = {}
    leaked: dict[str, str] = {}
    for paths in group_by_content(files).values():
        anchor, *others = sorted(paths, key=lambda rel_path: (_SPLIT_PRIORITY[given[rel_path]], rel_path))
        for rel_path in others:
            target = duplicates if given[rel_path] == given[anchor] else leaked
            target[rel_path] = anchor
    return duplicates, leaked
