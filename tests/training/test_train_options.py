"""Optimizers, schedules, class weights, augmentation and mixed precision: each option reaches Keras as asked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from training.config import TrainConfig


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sgd", "SGD"), ("adam", "Adam"), ("nadam", "Nadam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop")],
)
def test_optimizer_flag_builds_that_optimizer(name: str, expected: str) -> None:
    from training.optim import make_optimizer

    optimizer = make_optimizer(TrainConfig(optimizer=name, momentum=0.8, nesterov=True), 0.01)
    assert type(optimizer).__name__ == expected
    if name == "sgd":
        assert optimizer.nesterov is True
        assert optimizer.momentum == pytest.approx(0.8)


def test_schedules_decay_over_the_phase_and_constant_does_not() -> None:
    from training.optim import learning_rate_for

    assert learning_rate_for(TrainConfig(lr_schedule="constant"), 0.1, 10, 4) == 0.1
    for schedule in ("cosine", "exponential", "step"):
        rate = learning_rate_for(TrainConfig(lr_schedule=schedule), 0.1, 10, 4)
        first, last = float(rate(0)), float(rate(39))
        assert first == pytest.approx(0.1)
        assert last < 0.7 * first, schedule


def test_plateau_and_early_stopping_are_callbacks(tmp_path: Path) -> None:
    from training.optim import phase_callbacks

    config = TrainConfig(lr_schedule="plateau", early_stopping=3)
    names = [type(cb).__name__ for cb in phase_callbacks(config, tmp_path, has_validation=True, progress=False)]
    assert names == ["EpochCheckpoint", "CSVLogger", "TensorBoard", "ReduceLROnPlateau", "EarlyStopping"]


def test_auto_class_weights_balance_an_imbalanced_split() -> None:
    from training.train import class_weights_for

    records = [SimpleNamespace(label=label) for label in [0] * 30 + [1] * 10]
    weights = class_weights_for(records, 2, "auto")
    assert weights == {0: pytest.approx(40 / 60), 1: pytest.approx(40 / 20)}
    assert class_weights_for(records, 2, "none") is None


@pytest.mark.slow
def test_augmented_mixed_precision_run_trains_end_to_end(tmp_path: Path) -> None:
    from training.data.sample import SampleSpec, write_sample
    from training.train import train

    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=8, size=36, seed=5))
    config = TrainConfig(
        data=str(tmp_path / "data"),
        name="aug",
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=2,
        dense_units=8,
        augment=True,
        mixed_precision=True,
        optimizer="sgd",
        lr_schedule="cosine",
        early_stopping=2,
        runs_dir=str(tmp_path / "runs"),
    )
    result = train(config, progress=False)
    import keras

    assert keras.mixed_precision.global_policy().name == "float32", "the policy is restored after the run"
    assert result.classifier.model.layers[-1].output.dtype == "float32"
    assert result.classifier.base.layers[1].compute_dtype == "float16"
    probabilities = result.classifier.model(np.zeros((1, 32, 32, 3), "float32"), training=False)
    assert np.isclose(float(np.sum(probabilities)), 1.0, atol=1e-3)
    assert len((result.run_dir / "phase1" / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs
