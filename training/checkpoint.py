"""The per-epoch checkpoint behind `--resume`: weights, optimizer state and epoch in one atomically replaced file.

Keras's BackupAndRestore writes HDF5 through h5py, which costs more than a whole head epoch on cached
features; a flat .npz of the same arrays is written in a few milliseconds per megabyte.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.npz"


class EpochCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]
    """Save after every epoch; at the start of `fit`, restore the last save and continue after its epoch."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.path = directory / CHECKPOINT_FILE

    def on_train_begin(self, logs: Any = None) -> None:
        if not self.path.is_file():
            return
        with np.load(self.path) as saved:
            epoch = int(saved["epoch"])
            weights = [saved[f"weight_{i}"] for i in range(int(saved["weight_count"]))]
            optimizer_state = [saved[f"optimizer_{i}"] for i in range(int(saved["optimizer_count"]))]
        self.model.set_weights(weights)
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        for variable, value in zip(optimizer.variables, optimizer_state, strict=True):
            variable.assign(value)
        self.model._initial_epoch = epoch  # how Keras's own BackupAndRestore makes fit() skip finished epochs
        logger.info("restored %s (epoch %d done)", self.path, epoch)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        weights = self.model.get_weights()
        optimizer_state = [np.asarray(variable) for variable in self.model.optimizer.variables]
        arrays = {f"weight_{i}": value for i, value in enumerate(weights)}
        arrays.update({f"optimizer_{i}": value for i, value in enumerate(optimizer_state)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial.npz")
        np.savez(partial, epoch=epoch + 1, weight_count=len(weights), optimizer_count=len(optimizer_state), **arrays)
        os.replace(partial, self.path)  # a crash mid-write keeps the previous checkpoint
