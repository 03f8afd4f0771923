"""The tf.data input pipeline: file records → batches of (float32 pixels [B, S, S, 3] in [0, 255], int32 labels [B]).

Decoding and resizing call `training.preprocessing.decode_and_resize`, the function the exported graph runs
on request bytes, so training sees exactly the pixels serving will see. Order: decode+resize in parallel
(deterministic) → cache → shuffle → batch → prefetch. The cache holds decoded, *un-augmented* images: augmentation
belongs in the model (`augmentation_layers`), where it draws fresh randomness every epoch.

Memory: decoded float32 images take S*S*12 bytes each (224 px: 602 KB; PetImages: ~14 GB). An in-memory cache
that would not fit is skipped with a warning, and shuffling then happens on file names, before decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from training.data.checks import to_png_bytes
from training.data.scan import ImageRecord
from training.preprocessing import decode_and_resize

logger = logging.getLogger(__name__)

Dataset = Any  # tf.data.Dataset; TensorFlow ships no type information.
# Shuffle buffer behind a file cache: bounded, so a dataset larger than memory stays out of memory.
FILE_CACHE_SHUFFLE_BUFFER = 1024


def _inline_bytes(record: ImageRecord) -> bytes:
    """PNG bytes for a file TensorFlow cannot decode itself; empty for every other file (read in the graph)."""
    return to_png_bytes(record.path.read_bytes()) if record.needs_conversion else b""


def _load(path: Any, inline: Any, image_size: int) -> Any:
    image_bytes = tf.cond(tf.strings.length(inline) > 0, lambda: inline, lambda: tf.io.read_file(path))
    return decode_and_resize(image_bytes, image_size)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cache_target(cache: bool | str | Path, count: int, image_size: int, shuffle: bool) -> str | None:
    """The argument for Dataset.cache ("" = memory, else a file prefix), or None for no cache."""
    if cache is False:
        return None
    if cache is not True:
        return str(cache)
    # A full shuffle buffer behind the cache holds a second copy of every image.
    needed = count * image_size * image_size * 12 * (2 if shuffle else 1)
    available = available_memory_bytes()
    if available is not None and needed > available // 2:
        logger.warning(
            "decoded images would need %.1f GB, over half the available %.1f GB: decoding every epoch instead "
            "(pass cache=PATH for a file cache)",
            needed / 1e9,
            available / 1e9,
        )
        return None
    return ""


def _permuted(records: Sequence[ImageRecord], seed: int) -> list[ImageRecord]:
    """A seeded permutation, so a cached stream is already class-mixed before any bounded shuffle buffer."""
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[index] for index in order]


def _file_dataset(records: Sequence[ImageRecord]) -> Dataset:
    columns = (
        tf.constant([str(record.path) for record in records], tf.string),
        tf.constant([_inline_bytes(record) for record in records], tf.string),
        tf.constant([record.label for record in records], tf.int32),
    )
    return tf.data.Dataset.from_tensor_slices(columns)  # typed constants: an empty split still works


def make_dataset(
    records: Sequence[ImageRecord],
    image_size: int,
    batch_size: int,
    *,
    num_classes: int,
    shuffle: bool,
    seed: int,
    cache: bool | str | Path = True,
) -> Dataset:
    """Batches of (pixels, labels) from scanned records; the same seed gives the same order on every run.

    `cache`: True keeps decoded images in memory when they fit (see module docstring), a path caches them in
    files with that prefix, False decodes every epoch. With `shuffle`, every epoch is reshuffled; without it,
    batches follow `records` in order. No records give an empty dataset with the same element types.
    """
    if any(not 0 <= record.label < num_classes for record in records):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    if shuffle:
        records = _permuted(records, seed)
    cache_to = _cache_target(cache, len(records), image_size, shuffle)
    dataset = _file_dataset(records)
    reshuffle = {"seed": seed, "reshuffle_each_iteration": True}
    if shuffle and cache_to is None:
        dataset = dataset.shuffle(max(1, len(records)), **reshuffle)  # file names only: cheap
    dataset = dataset.map(
        lambda path, data, label: (_load(path, data, image_size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if cache_to is not None:
        dataset = dataset.cache(cache_to)
        if shuffle:
            buffer = len(records) if cache_to == "" else min(len(records), FILE_CACHE_SHUFFLE_BUFFER)
            dataset = dataset.shuffle(max(1, buffer), **reshuffle)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
