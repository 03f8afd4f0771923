"""Persistent store of frozen-base features: one write-once `.npy` entry per (image content × base identity × view).

A key hashes the image's content (sha256 of its bytes, from the scan), the base's identity (a hash of its actual
weight tensors, so `--weights none` with another seed or another weights file never matches), the image size,
the preprocessing version and the view. Entries are written to a temporary name in the same directory, fsynced
and renamed: a reader never sees a half-written entry, and two runs writing the same entry write the same bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tlserve.atomic import replace_atomically

# Bump when decoding, resizing or `preprocess_input` changes what the base sees: every old entry is then a miss.
PREPROCESSING_VERSION = 1
ENV_VAR = "TLSERVE_FEATURE_STORE"


@dataclass
class FeatureCounts:
    """Images (or views) whose base features came from the store (`reused`) or from the base in this run."""

    reused: int = 0
    computed: int = 0

    def add(self, other: FeatureCounts) -> None:
        self.reused += other.reused
        self.computed += other.computed

    def to_dict(self) -> dict[str, int]:
        return {"reused": self.reused, "computed": self.computed}


def store_path(feature_store: str, runs_dir: str) -> Path:
    """--feature-store, else $TLSERVE_FEATURE_STORE, else `<runs_dir>/.features`."""
    return Path(feature_store or os.environ.get(ENV_VAR, "") or Path(runs_dir) / ".features")


def base_identity(base_name: str, weights: Sequence[np.ndarray]) -> str:
    """A hash of the base's name and weight tensors: the honest identity whatever `--weights` said."""
    digest = hashlib.sha256(base_name.encode())
    for tensor in weights:
        array = np.ascontiguousarray(tensor)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def entry_key(content_sha256: str, identity: str, image_size: int, view: int = 0) -> str:
    fields = f"{content_sha256}\0{identity}\0{image_size}\0{PREPROCESSING_VERSION}\0{view}"
    return hashlib.sha256(fields.encode()).hexdigest()


class FeatureStore:
    """Write-once entries under `root/<key[:2]>/<key>.npy`; a run uses one partition per base and size."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._made: set[Path] = set()  # fan-out folders known to exist (a mkdir per entry cost ~0.15 ms each)

    def partition(self, base_name: str, identity: str, image_size: int) -> FeatureStore:
        """The sub-store of one base identity and size, so `features ls` and `prune` can name what they hold.

        The key alone decides a hit; the folder name is for people.
        """
        return FeatureStore(self.root / f"{base_name}-{image_size}px-{identity[:16]}")

    def path_of(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def get(self, key: str) -> Any:
        """The entry memory-mapped (nothing is read until used)."""
        return np.load(self.path_of(key), mmap_mode="r", allow_pickle=False)

    def put(self, key: str, features: np.ndarray) -> None:
        """Write atomically: temp file in the same directory, fsync, rename over (identical) content."""
        target = self.path_of(key)
        if target.parent not in self._made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)

        def write(stream: BinaryIO) -> None:
            np.save(stream, np.asarray(features), allow_pickle=False)

        try:
            replace_atomically(target, write, prefix=".tmp-", suffix=".npy")
        except FileNotFoundError:  # the folder was removed while this run used the store (rm -rf, a new disk)
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(target, write, prefix=".tmp-", suffix=".npy")

    def entries(self) -> list[Path]:
        """Complete entries only: a temporary file a killed writer left behind is not one."""
        found = self.root.rglob("*.npy") if self.root.is_dir() else []
        return sorted(path for path in found if not path.name.startswith("."))


def summarize(root: Path) -> list[dict[str, Any]]:
    """One row per partition (base, size, base identity): entries and bytes on disk."""
    rows = []
    for partition in sorted(path for path in Path(root).glob("*") if path.is_dir()):
        entries = FeatureStore(partition).entries()
        size = sum(entry.stat().st_size for entry in entries)
        rows.append({"partition": partition.name, "entries": len(entries), "bytes": size})
    return rows


def prune(root: Path, *, older_than_s: float | None = None, max_bytes: int | None = None) -> tuple[int, int]:
    """Delete entries written longer ago than `older_than_s`, then the oldest until at most `max_bytes` remain.

    Returns (entries removed, bytes freed). A removed entry is only a future miss: it is computed again when needed.
    """
    import time

    entries = sorted(FeatureStore(Path(root)).entries(), key=lambda path: path.stat().st_mtime)
    stats = [(entry, entry.stat()) for entry in entries]
    total = sum(stat.st_size for _, stat in stats)
    removed = freed = 0
    now = time.time()
    for entry, stat in stats:
        too_old = older_than_s is not None and now - stat.st_mtime > older_than_s
        too_big = max_bytes is not None and total - freed > max_bytes
        if not (too_old or too_big):
            continue
        entry.unlink(missing_ok=True)
        removed, freed = removed + 1, freed + stat.st_size
    return removed, freed
