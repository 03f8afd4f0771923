"""Optimizers, learning-rate schedules and the callbacks of a training phase."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras

from training.checkpoint import EpochCheckpoint
from training.config import TrainConfig
from training.progress import StderrProgress

logger = logging.getLogger(__name__)
ADAMW_DEFAULT_WEIGHT_DECAY = 0.004  # keras.optimizers.AdamW's own default


def learning_rate_for(config: TrainConfig, base_rate: float, steps_per_epoch: int, epochs: int) -> Any:
    """A float or a LearningRateSchedule stepping once per batch; `plateau` is a callback, not a schedule."""
    total_steps = max(1, steps_per_epoch * epochs)
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_rate, decay_steps=total_steps)
    if config.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            base_rate, decay_steps=max(1, steps_per_epoch), decay_rate=0.9
        )
    if config.lr_schedule == "step":
        # ×0.1 at half and at three quarters of the phase, the classic step recipe.
        boundaries = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
        values = [base_rate, base_rate * 0.1, base_rate * 0.01]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return base_rate


def make_optimizer(config: TrainConfig, learning_rate: Any) -> Any:
    """The configured optimizer; weight decay is decoupled (applied by the optimizer, not the loss)."""
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay
        )
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "adamw":
        # AdamW without decay is Adam: an unset (0) --weight-decay means AdamW's own default, said in the log.
        if not decay:
            logger.info("adamw: --weight-decay not set, using AdamW's default %s", ADAMW_DEFAULT_WEIGHT_DECAY)
        return keras.optimizers.AdamW(learning_rate, weight_decay=decay or ADAMW_DEFAULT_WEIGHT_DECAY)
    if config.optimizer == "nadam":
        return keras.optimizers.Nadam(learning_rate, weight_decay=decay)
    return keras.optimizers.Adam(learning_rate, weight_decay=decay)


def phase_callbacks(
    config: TrainConfig, phase_dir: Path, *, has_validation: bool, progress: bool, scheduled: bool = True
) -> list[Any]:
    """Checkpoint every epoch (resumable), CSV history, TensorBoard, the optional plateau (a `scheduled` phase
    only) and early stopping."""
    monitor = "val_loss" if has_validation else "loss"
    callbacks: list[Any] = [
        EpochCheckpoint(phase_dir / "checkpoint"),
        keras.callbacks.CSVLogger(str(phase_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(phase_dir / "tensorboard"), write_graph=False, profile_batch=0),
    ]
    if progress:
        callbacks.append(StderrProgress())
    if scheduled and config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.2, patience=2, verbose=progress))
    if config.early_stopping > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping, restore_best_weights=True)
        )
    return callbacks
