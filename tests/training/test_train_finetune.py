"""Phase 2 (fine-tuning) trains the top of the base but never touches BatchNormalization statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.small import small_run

pytestmark = pytest.mark.slow


def test_fine_tuning_updates_top_layers_but_not_batch_norm_statistics(tmp_path: Path) -> None:
    import keras

    from training.data.sample import SampleSpec, write_sample
    from training.model import build_classifier
    from training.train import train

    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=10, size=36, seed=3))
    config, run = small_run(
        tmp_path / "data", tmp_path / "runs", name="bn", base="mobilenet_v2", fine_tune_epochs=2,
        fine_tune_from="block_16", fine_tune_learning_rate=1e-2, head="gap", dense_units=0,
    )  # fmt: skip
    keras.utils.set_random_seed(config.seed)
    initial = build_classifier(config, num_classes=2).base  # same seed → the run's starting weights
    result = train(config, run, progress=False)
    base = result.classifier.base

    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms, "the test needs a base with BatchNormalization"
    for layer in norms:
        before = initial.get_layer(layer.name)
        np.testing.assert_array_equal(layer.moving_mean.numpy(), before.moving_mean.numpy())
        np.testing.assert_array_equal(layer.moving_variance.numpy(), before.moving_variance.numpy())
        np.testing.assert_array_equal(layer.gamma.numpy(), before.gamma.numpy())

    top = base.get_layer("block_16_project")
    assert not np.array_equal(top.kernel.numpy(), initial.get_layer("block_16_project").kernel.numpy())
    frozen = base.get_layer("block_1_project")
    np.testing.assert_array_equal(frozen.kernel.numpy(), initial.get_layer("block_1_project").kernel.numpy())
