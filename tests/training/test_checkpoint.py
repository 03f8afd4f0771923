"""The per-epoch checkpoint behind --resume holds exactly the final weights, optimizer state and epoch."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from training.checkpoint import CHECKPOINT_FILE, EpochCheckpoint


def _fit(directory: Path, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(64, 4)).astype("float32"), np.arange(64) % 3
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[EpochCheckpoint(directory)])
    return model


def test_fit_returns_with_the_last_epoch_on_disk_equal_to_the_final_weights(tmp_path: Path) -> None:
    model = _fit(tmp_path / "checkpoint", epochs=3)
    with np.load(tmp_path / "checkpoint" / CHECKPOINT_FILE) as saved:
        assert int(saved["epoch"]) == 3
        for index, weight in enumerate(model.get_weights()):
            np.testing.assert_array_equal(saved[f"weight_{index}"], weight)
        state = [variable.numpy() for variable in model.optimizer.variables]
        assert int(saved["optimizer_count"]) == len(state)
        for index, value in enumerate(state):
            np.testing.assert_array_equal(saved[f"optimizer_{index}"], value)
    assert sorted(path.name for path in (tmp_path / "checkpoint").iterdir()) == [CHECKPOINT_FILE]
