"""Input datasets of a training run: decoded pixels from the data pipeline, and base features from the store.

Both yield elements in the same order for the same seed (shuffle of an unbatched stream of the same length), which
is why phase 1 on stored features and phase 1 end to end through the frozen base learn the same head. Stored
features stream from their files batch by batch: phase 1's memory does not grow with the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from training.config import TrainConfig
from training.data import make_dataset


def pixel_dataset(
    records: Sequence[Any],
    config: TrainConfig,
    num_classes: int,
    *,
    shuffle: bool,
    augment: Any = None,
    cache: bool = True,
) -> Any:
    """(float32 pixels [B, S, S, 3] in [0, 255], int32 labels); augmentation after the cache, train split only.

    `cache=False` for a single pass (feature extraction, evaluation): caching it would only hold every decoded
    image in memory at once.
    """
    elements = make_dataset(
        list(records),
        config.image_size,
        config.batch_size,
        num_classes=num_classes,
        shuffle=False,
        seed=config.seed,
        cache=cache,
    ).unbatch()
    # unbatch() forgets the length; Keras needs it for progress bars and per-epoch schedules.
    elements = elements.apply(tf.data.experimental.assert_cardinality(len(records)))
    return _batch(elements, len(records), config, shuffle=shuffle, augment=augment)


def _batch(elements: Any, count: int, config: TrainConfig, *, shuffle: bool, augment: Any = None) -> Any:
    if shuffle:
        elements = elements.shuffle(max(1, count), seed=config.seed, reshuffle_each_iteration=True)
    batches = elements.batch(config.batch_size)
    if augment is not None:
        # After the cache: a fresh random augmentation every epoch (augmenting before .cache() freezes it).
        batches = batches.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def extract_features(feature_extractor: Any, dataset: Any, *, progress: bool = False) -> Iterator[np.ndarray]:
    """Run the frozen base over a (pixels, labels) dataset, one float32 batch of features at a time.

    Batch by batch, so no array of every image's features is held at once. Several batches run through the
    compiled predict function (graph execution; on a GPU it saves per-op dispatch); a single batch (a few new
    images) runs eagerly, without tracing one (on this CPU both take ~0.3 s per 32 images at 64 px; tracing ~0.2 s).
    """
    from training.progress import StderrProgress

    steps = int(dataset.cardinality().numpy())
    bar = StderrProgress("base features") if progress else None
    if bar is not None:
        bar.set_params({"steps": steps})
        bar.on_predict_begin()
    for pixels, _ in dataset:
        features = (
            feature_extractor(pixels, training=False) if steps == 1 else feature_extractor.predict_on_batch(pixels)
        )
        yield np.asarray(features, np.float32)
        if bar is not None:
            bar.on_predict_batch_end(0)
    if bar is not None:
        bar.on_predict_end()


def labels_of(dataset: Any) -> np.ndarray:
    batches = [y.numpy() for _, y in dataset]
    return np.concatenate(batches).astype(np.int32) if batches else np.zeros(0, np.int32)


def stored_features(
    feature_extractor: Any,
    records: Sequence[Any],
    config: TrainConfig,
    num_classes: int,
    store: Any,
    identity: str,
    *,
    view: int = 0,
    augment: Any = None,
    progress: bool = False,
) -> tuple[list[str], np.ndarray, Any]:
    """The store entries of `records` in order; the base runs only over the images the store lacks.

    Returns (entry paths, labels, FeatureCounts). Keys come from each file's content hash (the scan's sha256),
    so a file renamed keeps its entry and a file rewritten under the same name gets a new one. View 0 is the
    plain image; a view k > 0 is one random draw of `augment` (whose settings must be part of `identity`).
    """
    from training.feature_store import FeatureCounts, entry_key

    keys = [entry_key(record.sha256, identity, config.image_size, view) for record in records]
    missing = [index for index, key in enumerate(keys) if not store.has(key)]
    if missing:
        pixels = pixel_dataset([records[index] for index in missing], config, num_classes, shuffle=False, cache=False)
        if augment is not None:
            # One map call at a time (the layers' seeded random state advances in batch order: the same views
            # on every run), prefetched so the next batch is augmented while the base runs on this one.
            pixels = pixels.map(lambda x, y: (augment(x, training=True), y)).prefetch(tf.data.AUTOTUNE)
        pending = iter(missing)
        for batch in extract_features(feature_extractor, pixels, progress=progress):
            for row in batch:  # written as they come: memory holds one batch, a killed run keeps what it finished
                store.put(keys[next(pending)], row)
    paths = [str(store.path_of(key)) for key in keys]
    labels = np.asarray([int(record.label) for record in records], np.int32)
    return paths, labels, FeatureCounts(reused=len(keys) - len(missing), computed=len(missing))


def entry_dataset(paths: Sequence[str], labels: np.ndarray, config: TrainConfig, *, shuffle: bool) -> Any:
    """Store entries as a dataset of (features, labels), batched and shuffled exactly like `pixel_dataset`.

    Only file names are shuffled; each element is read from its file when its batch is built.
    """
    read = _entry_reader(paths[0]) if len(paths) else _no_entry
    elements = tf.data.Dataset.from_tensor_slices((tf.constant(list(paths), tf.string), labels))
    if shuffle:
        elements = elements.shuffle(max(1, len(paths)), seed=config.seed, reshuffle_each_iteration=True)
    elements = elements.map(lambda path, y: (read(path), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return elements.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def view_dataset(views: Sequence[Sequence[str]], labels: np.ndarray, config: TrainConfig) -> Any:
    """Stored augmented views ([N][K] entry paths): each epoch, each image shows one of its K views at random."""
    count = len(views[0])
    read = _entry_reader(views[0][0])
    elements = tf.data.Dataset.from_tensor_slices((tf.constant([list(row) for row in views], tf.string), labels))
    elements = elements.shuffle(max(1, len(labels)), seed=config.seed, reshuffle_each_iteration=True)
    # The view drawn per image and epoch comes from a seeded stream (new each epoch): same seed, same draws.
    draws = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True)
    elements = tf.data.Dataset.zip(elements, draws).map(
        lambda row, draw: (read(tf.gather(row[0], draw % count)), row[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return elements.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def _no_entry(path: Any) -> Any:
    return tf.zeros([0], tf.float32)  # never called: an empty dataset has no element to read


def _entry_reader(example: str) -> Any:
    """A graph function reading one `.npy` entry: its float32 data are the file's last bytes, after the header.

    Every entry of one partition has the same shape (one base, one size), so one example fixes the layout.
    """
    sample = np.load(example, mmap_mode="r", allow_pickle=False)
    if sample.dtype != np.dtype("<f4"):
        raise ValueError(f"{example}: feature entries are little-endian float32, got {sample.dtype}")
    shape, data_bytes = tuple(int(n) for n in sample.shape), int(sample.nbytes)

    def read(path: Any) -> Any:
        content = tf.io.read_file(path)
        data = tf.strings.substr(content, tf.strings.length(content) - data_bytes, data_bytes)
        return tf.reshape(tf.io.decode_raw(data, tf.float32, little_endian=True), shape)

    return read


def predict_entries(model: Any, paths: Sequence[str], config: TrainConfig) -> np.ndarray:
    """`model` (the head) over store entries in order, batch by batch; [0, C] for no entries."""
    dataset = entry_dataset(paths, np.zeros(len(paths), np.int32), config, shuffle=False)
    outputs = [np.asarray(model(features, training=False), np.float32) for features, _ in dataset]
    return np.concatenate(outputs) if outputs else np.zeros((0, int(model.output_shape[-1])), np.float32)
