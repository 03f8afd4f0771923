"""The fits of a training run: the head on cached features, the head end to end, and fine-tuning.

Every phase compiles its own optimizer (changing `trainable` needs a recompile) and checkpoints each epoch
into its own directory, so `--resume` restores weights, optimizer state and the epoch counter per phase.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.features import extract_features, feature_dataset, pixel_dataset
from training.model import Classifier
from training.optim import learning_rate_for, make_optimizer, phase_callbacks

logger = logging.getLogger(__name__)

LOSS = "sparse_categorical_crossentropy"


def fit_head_on_features(
    classifier: Classifier,
    config: TrainConfig,
    splits: dict[str, list[Any]],
    phase_dir: Path,
    class_weight: dict[int, float] | None,
    *,
    progress: bool,
) -> Any:
    """Phase 1, fast path: one pass of the frozen base per image, then epochs over small feature arrays."""
    num_classes = int(classifier.head.output_shape[-1])
    logger.info("phase 1: extracting base features once (%d train images)", len(splits["train"]))
    train_pixels = pixel_dataset(splits["train"], config, num_classes, shuffle=False)
    train_x, train_y = extract_features(classifier.feature_extractor, train_pixels, progress=progress)
    train_data = feature_dataset(train_x, train_y, config, shuffle=True)
    val_data = None
    if splits["val"]:
        val_pixels = pixel_dataset(splits["val"], config, num_classes, shuffle=False)
        val_x, val_y = extract_features(classifier.feature_extractor, val_pixels, progress=progress)
        val_data = feature_dataset(val_x, val_y, config, shuffle=False)
    logger.info("phase 1: training the head on cached features for %d epochs", config.epochs)
    return _fit(classifier.head, config, train_data, val_data, phase_dir, class_weight, progress=progress)


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


def augmentation_for(config: TrainConfig) -> Any:
    from training.data import augmentation_layers

    return augmentation_layers(
        flip=config.flip,
        rotation=config.rotation,
        zoom=config.zoom,
        translation=config.translation,
        contrast=config.contrast,
        seed=config.seed,
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
