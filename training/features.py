"""Input datasets of a training run: decoded pixels from the data pipeline, and cached base features.

Both yield elements in the same order for the same seed (shuffle of an unbatched, cached stream), which
is why phase 1 on cached features and phase 1 end to end through the frozen base learn the same head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from training.config import TrainConfig
from training.data import make_dataset


def pixel_dataset(
    records: Sequence[Any], config: TrainConfig, num_classes: int, *, shuffle: bool, augment: Any = None
) -> Any:
    """(float32 pixels [B, S, S, 3] in [0, 255], int32 labels); augmentation after the cache, train split only."""
    elements = make_dataset(
        list(records),
        config.image_size,
        config.batch_size,
        num_classes=num_classes,
        shuffle=False,
        seed=config.seed,
        cache=True,
    ).unbatch()
    # unbatch() forgets the length; Keras needs it for progress bars and per-epoch schedules.
    elements = elements.apply(tf.data.experimental.assert_cardinality(len(records)))
    return _batch(elements, len(records), config, shuffle=shuffle, augment=augment)


def feature_dataset(features: np.ndarray, labels: np.ndarray, config: TrainConfig, *, shuffle: bool) -> Any:
    """Cached base features as a dataset, batched and shuffled exactly like `pixel_dataset`."""
    elements = tf.data.Dataset.from_tensor_slices((features, labels))
    return _batch(elements, len(labels), config, shuffle=shuffle)


def _batch(elements: Any, count: int, config: TrainConfig, *, shuffle: bool, augment: Any = None) -> Any:
    if shuffle:
        elements = elements.shuffle(max(1, count), seed=config.seed, reshuffle_each_iteration=True)
    batches = elements.batch(config.batch_size)
    if augment is not None:
        # After the cache: a fresh random augmentation every epoch (augmenting before .cache() freezes it).
        batches = batches.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def extract_features(feature_extractor: Any, dataset: Any, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Run the frozen base once over a (pixels, labels) dataset; returns features and labels as arrays."""
    from training.progress import StderrProgress

    callbacks = [StderrProgress("base features")] if progress else []
    features = feature_extractor.predict(dataset.map(lambda x, y: x), verbose=0, callbacks=callbacks)
    labels = np.concatenate([y.numpy() for _, y in dataset]) if features.shape[0] else np.zeros(0, np.int32)
    return np.asarray(features, np.float32), labels.astype(np.int32)


def labels_of(dataset: Any) -> np.ndarray:
    batches = [y.numpy() for _, y in dataset]
    return np.concatenate(batches).astype(np.int32) if batches else np.zeros(0, np.int32)
