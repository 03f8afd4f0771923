"""The fits of a training run: the head on cached features, the head end to end, and fine-tuning.

Every phase compiles its own optimizer (changing `trainable` needs a recompile) and checkpoints each epoch
into its own directory, so `--resume` restores weights, optimizer state and the epoch counter per phase.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import RunOptions, TrainConfig
from training.feature_store import FeatureCounts, FeatureStore, base_identity, store_path
from training.features import entry_dataset, pixel_dataset, stored_features, view_dataset
from training.model import Classifier
from training.optim import learning_rate_for, make_optimizer, phase_callbacks

logger = logging.getLogger(__name__)

LOSS = "sparse_categorical_crossentropy"
# View k of seed s seeds its augmentation layers from STRIDE * s + 10 * k (each layer takes seed + 0..4).
VIEW_SEED_STRIDE = 100_003


@dataclass
class FeatureSource:
    """Where a run's base features live: the store partition of this base and size, and the base's identity."""

    store: FeatureStore
    identity: str
    extractor: Any  # pixels → base features (computes what the store lacks)


def open_feature_source(classifier: Classifier, config: TrainConfig, run: RunOptions) -> FeatureSource:
    """The store partition for the base as it is now (after any warm start, before any fine-tuning)."""
    identity = base_identity(config.base, classifier.feature_extractor.get_weights())
    if config.mixed_precision:  # float16 compute gives other features from the same weights
        identity = hashlib.sha256(f"{identity}\0mixed_float16".encode()).hexdigest()
    root = store_path(run.feature_store, run.runs_dir)
    store = FeatureStore(root).partition(config.base, identity, config.image_size)
    return FeatureSource(store=store, identity=identity, extractor=classifier.feature_extractor)


def fit_head_on_features(
    classifier: Classifier,
    config: TrainConfig,
    splits: dict[str, list[Any]],
    phase_dir: Path,
    class_weight: dict[int, float] | None,
    *,
    progress: bool,
    source: FeatureSource,
) -> FeatureCounts:
    """Phase 1, fast path: base features from the persistent store (the base runs only over images it lacks),
    then epochs over feature entries streamed from their files. Returns how many were reused / computed.
    """
    num_classes = int(classifier.head.output_shape[-1])
    counts = FeatureCounts()
    logger.info("phase 1: base features from %s (%d train images)", source.store.root, len(splits["train"]))
    # The plain (view 0) features of both splits in one pass over what the store lacks: a retrain's few new
    # images go through the base in one batch stream, not one partial batch per split.
    plain = splits["val"] if config.augment else splits["train"] + splits["val"]
    paths, labels, plain_counts = stored_split(source, plain, config, num_classes, progress=progress)
    counts.add(plain_counts)
    if config.augment:
        train_data = _augmented_views(config, splits["train"], num_classes, source, counts)
    else:
        train_count = len(splits["train"])
        train_data = entry_dataset(paths[:train_count], labels[:train_count], config, shuffle=True)
        paths, labels = paths[train_count:], labels[train_count:]
    val_data = entry_dataset(paths, labels, config, shuffle=False) if splits["val"] else None
    logger.info("phase 1: training the head on stored features for %d epochs", config.epochs)
    _fit(classifier.head, config, train_data, val_data, phase_dir, class_weight, progress=progress)
    return counts


def stored_split(
    source: FeatureSource, records: list[Any], config: TrainConfig, num_classes: int, *, progress: bool = False
) -> tuple[list[str], np.ndarray, FeatureCounts]:
    """Entry paths and labels of one split's plain (view 0) features, computing only what the store lacks."""
    extractor, store = source.extractor, source.store
    return stored_features(extractor, records, config, num_classes, store, source.identity, progress=progress)


def _augmented_views(
    config: TrainConfig, records: list[Any], num_classes: int, source: FeatureSource, counts: FeatureCounts
) -> Any:
    """K augmented views per training image, each through the base once ever; every epoch shows one at random.

    The augmentation settings are part of the views' keys: other settings, other views.
    """
    settings = (config.flip, config.rotation, config.zoom, config.translation, config.contrast, config.seed)
    view_identity = hashlib.sha256(f"{source.identity}\0augment{settings}".encode()).hexdigest()
    views: list[list[str]] = []
    labels = np.zeros(0, np.int32)
    for view in range(1, config.augment_views + 1):
        # Layers seeded per view: view k's draws never depend on which views an earlier run computed
        # (one layer's stream continued across views would make a later run's view 3 repeat view 1).
        augment = augmentation_for(config, seed=VIEW_SEED_STRIDE * config.seed + 10 * view)
        paths, labels, view_counts = stored_features(
            source.extractor, records, config, num_classes, source.store, view_identity, view=view, augment=augment
        )
        counts.add(view_counts)
        views.append(paths)
    logger.info("phase 1: %d stored augmented views per training image", config.augment_views)
    return view_dataset([list(row) for row in zip(*views, strict=True)], labels, config)


def fit_head_end_to_end(
    classifier: Classifier,
    config: TrainConfig,
    splits: dict[str, list[Any]],
    phase_dir: Path,
    class_weight: dict[int, float] | None,
    *,
    progress: bool,
) -> Any:
    """Phase 1 through the frozen base (needed when augmentation changes the pixels every epoch)."""
    train_data, val_data = _pixel_splits(classifier, config, splits)
    logger.info("phase 1: training the head end to end for %d epochs", config.epochs)
    return _fit(classifier.model, config, train_data, val_data, phase_dir, class_weight, progress=progress)


def fine_tune(
    classifier: Classifier,
    config: TrainConfig,
    splits: dict[str, list[Any]],
    phase_dir: Path,
    class_weight: dict[int, float] | None,
    *,
    progress: bool,
) -> Any:
    """Phase 2: the top of the base is trainable now, at the (much lower) fine-tuning learning rate.

    That rate stays constant: `--lr-schedule` shapes phase 1 only. Decaying an already tiny rate (or cutting it
    on a plateau) would stop the fine-tuning before it starts; early stopping still applies.
    """
    train_data, val_data = _pixel_splits(classifier, config, splits)
    return _fit(
        classifier.model,
        config,
        train_data,
        val_data,
        phase_dir,
        class_weight,
        progress=progress,
        epochs=config.fine_tune_epochs,
        base_rate=config.fine_tune_learning_rate,
        scheduled=False,
    )


def _pixel_splits(classifier: Classifier, config: TrainConfig, splits: dict[str, list[Any]]) -> tuple[Any, Any]:
    num_classes = int(classifier.head.output_shape[-1])
    augment = augmentation_for(config) if config.augment else None
    train_data = pixel_dataset(splits["train"], config, num_classes, shuffle=True, augment=augment)
    val_data = pixel_dataset(splits["val"], config, num_classes, shuffle=False) if splits["val"] else None
    return train_data, val_data


def augmentation_for(config: TrainConfig, *, seed: int | None = None) -> Any:
    """The augmentation layers of `config` (seeded with `seed`, default the run's seed)."""
    from training.data import augmentation_layers

    return augmentation_layers(
        flip=config.flip,
        rotation=config.rotation,
        zoom=config.zoom,
        translation=config.translation,
        contrast=config.contrast,
        seed=config.seed if seed is None else seed,
    )


def _fit(
    model: Any,
    config: TrainConfig,
    train_data: Any,
    val_data: Any,
    phase_dir: Path,
    class_weight: dict[int, float] | None,
    *,
    progress: bool,
    epochs: int | None = None,
    base_rate: float | None = None,
    scheduled: bool = True,
) -> Any:
    """Compile with a fresh optimizer and fit; the checkpoint callback restores an interrupted phase first.

    `scheduled=False` keeps the rate constant (no --lr-schedule, no plateau callback).
    """
    epochs = config.epochs if epochs is None else epochs
    steps_per_epoch = int(train_data.cardinality().numpy())
    base_rate = base_rate or config.learning_rate
    rate = learning_rate_for(config, base_rate, max(1, steps_per_epoch), epochs) if scheduled else base_rate
    model.compile(optimizer=make_optimizer(config, rate), loss=LOSS, metrics=["accuracy"])
    phase_dir.mkdir(parents=True, exist_ok=True)
    has_validation = val_data is not None
    callbacks = phase_callbacks(
        config, phase_dir, has_validation=has_validation, progress=progress, scheduled=scheduled
    )
    return model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself (seeded, identical on both phase-1 paths)
        verbose=0,  # progress goes to stderr (training.progress, one of `callbacks`)
    )
