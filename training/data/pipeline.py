"""The tf.data input pipeline: file records → batches of (float32 pixels [B, S, S, 3] in [0, 255], int32 labels [B]).

Decoding and resizing call `tlserve.preprocessing.decode_and_resize`, the function the exported graph runs
on request bytes, so training sees exactly the pixels serving will see. Order: decode+resize in parallel
(deterministic) → cache → shuffle → batch → prefetch. The cache holds decoded, *un-augmented* images: augmentation
belongs in the model (`augmentation_layers`), where it draws fresh randomness every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from tlserve.preprocessing import decode_and_resize
from training.data.checks import to_png_bytes
from training.data.scan import ImageRecord

logger = logging.getLogger(__name__)

Dataset = Any  # tf.data.Dataset; TensorFlow ships no type information.


def _inline_bytes(record: ImageRecord) -> bytes:
    """PNG bytes for a file TensorFlow cannot decode itself; empty for every other file (read in the graph)."""
    return to_png_bytes(record.path.read_bytes()) if record.needs_conversion else b""


def _load(path: Any, inline: Any, image_size: int) -> Any:
    image_bytes = tf.cond(tf.strings.length(inline) > 0, lambda: inline, lambda: tf.io.read_file(path))
    return decode_and_resize(image_bytes, image_size)


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

    `cache`: True keeps decoded images in memory (float32: S*S*12 bytes each), a path caches them in files
    there (for datasets larger than memory), False decodes every epoch. Reshuffles each epoch when `shuffle`.
    No records give an empty dataset with the same element types.
    """
    labels = [record.label for record in records]
    if any(not 0 <= label < num_classes for label in labels):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {min(labels)}..{max(labels)}")
    paths = [str(record.path) for record in records]
    inline = [_inline_bytes(record) for record in records]
    columns = (tf.constant(paths, tf.string), tf.constant(inline, tf.string), tf.constant(labels, tf.int32))
    dataset = tf.data.Dataset.from_tensor_slices(columns)  # typed constants: an empty split still works
    dataset = dataset.map(
        lambda path, data, label: (_load(path, data, image_size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if cache is not False:
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(max(1, len(records)), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
