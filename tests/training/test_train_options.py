"""Optimizers, schedules, class weights, augmentation and mixed precision: each option reaches Keras as asked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.training.small import small_run
from training.config import RunOptions, TrainConfig


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


def test_plateau_and_early_stopping_watch_validation_loss_with_their_patience(tmp_path: Path) -> None:
    import keras

    from training.optim import phase_callbacks

    config = TrainConfig(lr_schedule="plateau", early_stopping=3)
    callbacks = phase_callbacks(config, tmp_path, has_validation=True, progress=False)
    names = [type(cb).__name__ for cb in callbacks]
    assert names == ["EpochCheckpoint", "CSVLogger", "TensorBoard", "ReduceLROnPlateau", "EarlyStopping"]
    plateau, stopping = callbacks[3], callbacks[4]
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert (plateau.monitor, plateau.patience, plateau.factor) == ("val_loss", 2, pytest.approx(0.2))
    assert isinstance(stopping, keras.callbacks.EarlyStopping)
    assert (stopping.monitor, stopping.patience, stopping.restore_best_weights) == ("val_loss", 3, True)
    without_validation = phase_callbacks(config, tmp_path, has_validation=False, progress=False)
    assert [cb.monitor for cb in without_validation[3:]] == ["loss", "loss"]


def test_fine_tuning_phase_gets_no_plateau_callback(tmp_path: Path) -> None:
    from training.optim import phase_callbacks

    config = TrainConfig(lr_schedule="plateau", early_stopping=3)
    names = [
        type(cb).__name__
        for cb in phase_callbacks(config, tmp_path, has_validation=True, progress=False, scheduled=False)
    ]
    assert names == ["EpochCheckpoint", "CSVLogger", "TensorBoard", "EarlyStopping"]


def test_adamw_uses_the_given_weight_decay_or_its_own_default_when_unset(caplog) -> None:
    from training.config import build_config
    from training.optim import ADAMW_DEFAULT_WEIGHT_DECAY, make_optimizer

    assert make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.01), 0.1).weight_decay == pytest.approx(0.01)
    with caplog.at_level("INFO", logger="training.optim"):
        unset = make_optimizer(build_config({"optimizer": "adamw"}, {}), 0.1)
    assert unset.weight_decay == pytest.approx(ADAMW_DEFAULT_WEIGHT_DECAY)
    assert "using AdamW's default" in caplog.text
    assert make_optimizer(TrainConfig(optimizer="adam", weight_decay=0.0), 0.1).weight_decay is None


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
    config, run = small_run(
        tmp_path / "data", tmp_path / "runs", name="aug", epochs=2, augment=True, mixed_precision=True,
        optimizer="sgd", lr_schedule="cosine", early_stopping=2,
        feature_cache=False,  # end to end: augmentation inside the model
    )  # fmt: skip
    result = train(config, run, progress=False)
    import keras

    assert keras.mixed_precision.global_policy().name == "float32", "the policy is restored after the run"
    assert result.classifier.model.layers[-1].output.dtype == "float32"
    assert result.classifier.base.layers[1].compute_dtype == "float16"
    probabilities = result.classifier.model(np.zeros((1, 32, 32, 3), "float32"), training=False)
    assert np.isclose(float(np.sum(probabilities)), 1.0, atol=1e-3)
    assert len((result.run_dir / "phase1" / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs


def _shapes(root: Path, *, per_class: int, drop_from_last: int = 0) -> Path:
    from training.data.sample import SampleSpec, write_sample

    write_sample(root, SampleSpec(classes=2, per_class=per_class, size=36, seed=6))
    for path in sorted((root / "square").glob("*.png"))[:drop_from_last]:
        path.unlink()
    return root


def _small(data: Path, runs: Path, **changes: object) -> tuple[TrainConfig, RunOptions]:
    return small_run(data, runs, name="opt", **changes)


@pytest.mark.slow
def test_auto_class_weights_of_imbalanced_data_reach_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from training.data import scan_dataset
    from training.train import class_weights_for, train

    data = _shapes(tmp_path / "data", per_class=20, drop_from_last=14)  # 20 circles, 6 squares
    passed: list[object] = []
    fit = keras.Model.fit

    def fit_spy(self, *args, **kwargs):
        passed.append(kwargs.get("class_weight"))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit_spy)
    train(*_small(data, tmp_path / "runs", class_weights="auto"), progress=False)
    expected = class_weights_for(scan_dataset(data, progress=False).split("train"), 2, "auto")
    assert expected is not None
    assert expected[1] >= 2 * expected[0], "the data must be clearly imbalanced"
    assert passed == [expected]


@pytest.mark.slow
def test_lr_schedule_shapes_phase_1_and_fine_tuning_keeps_its_constant_rate(tmp_path: Path) -> None:
    from training.train import train

    data = _shapes(tmp_path / "data", per_class=8)
    config, run = _small(
        data, tmp_path / "runs", lr_schedule="cosine", fine_tune_epochs=1, fine_tune_learning_rate=1e-4
    )
    result = train(config, run, progress=False)
    head_rate = float(result.classifier.head.optimizer.learning_rate)  # phase 1 compiled the head
    fine_tune_rate = float(result.classifier.model.optimizer.learning_rate)  # phase 2 compiled the whole model
    assert head_rate < 0.5 * config.learning_rate, "cosine decayed phase 1's rate"
    assert fine_tune_rate == pytest.approx(1e-4), "phase 2 ran at the constant --fine-tune-learning-rate"
