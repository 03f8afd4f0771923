"""The classifier's architecture: the original recipe by configuration, the base's own preprocessing, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import TrainConfig, TrainConfigError

SMALL = dict(weights="none", image_size=32)


def layer_summary(model) -> list[tuple[str, object]]:
    import keras

    summary: list[tuple[str, object]] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            summary.append(("Dense", layer.units, layer.activation.__name__))
        elif not isinstance(layer, keras.layers.InputLayer):
            summary.append((type(layer).__name__,))
    return summary


@pytest.fixture(scope="module")
def recipe():
    from training.model import build_classifier

    return build_classifier(TrainConfig(**SMALL), num_classes=3)


def test_default_head_is_the_original_recipe(recipe) -> None:
    assert layer_summary(recipe.head) == [("Flatten",), ("Dense", 1024, "relu"), ("Dense", 3, "softmax")]
    assert recipe.base.name == "vgg16"
    assert not recipe.base.trainable


def test_gap_head_with_batch_norm_dropout_and_l2() -> None:
    from training.model import build_head

    config = TrainConfig(head="gap", dense_units=64, batch_norm=True, dropout=0.3, l2=1e-4)
    head = build_head((2, 2, 512), 4, config)
    names = [entry[0] for entry in layer_summary(head)]
    assert names == ["GlobalAveragePooling2D", "Dense", "BatchNormalization", "Activation", "Dropout", "Dense"]
    regularizer = head.layers[2].kernel_regularizer  # the Dense layer after the pooling
    assert regularizer.get_config() == {"l2": pytest.approx(1e-4)}


def test_model_applies_the_bases_own_preprocessing_not_rescaling(recipe) -> None:
    import keras

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = recipe.head(recipe.base(keras.applications.vgg16.preprocess_input(pixels.copy()), training=False))
    np.testing.assert_allclose(recipe.model(pixels, training=False), expected, rtol=1e-5, atol=1e-6)


def test_unreachable_imagenet_weights_are_a_config_error_naming_the_remedies(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from training.model import load_base

    def offline(*args, weights=None, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2] Name unknown")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(TrainConfigError) as raised:
        load_base(TrainConfig(base="mobilenet_v2", weights="imagenet", image_size=32))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("ImageNet weights for mobilenet_v2 could not be downloaded (URL fetch failure")
    for remedy in ("--weights PATH", "Keras cache", "--weights none"):
        assert remedy in message


def test_keras_download_chatter_goes_to_stderr_so_train_json_stays_parseable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    from training.model import load_base

    def downloading(*args, weights=None, **kwargs):
        print("Downloading data from https://storage.googleapis.com/tensorflow/keras-applications/...")
        return "base"

    monkeypatch.setattr(keras.applications, "MobileNetV2", downloading)
    assert load_base(TrainConfig(base="mobilenet_v2", weights="imagenet", image_size=32)) == "base"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Downloading data from" in captured.err


def test_weights_path_that_does_not_exist_is_a_config_error(tmp_path) -> None:
    from training.model import load_base

    with pytest.raises(TrainConfigError, match="no such file"):
        load_base(TrainConfig(weights=str(tmp_path / "missing.weights.h5"), image_size=32))


def test_fine_tune_from_block5_unfreezes_only_the_last_vgg16_block(recipe) -> None:
    from training.model import unfreeze_top

    count = unfreeze_top(recipe.base, "", "vgg16")
    trainable = [layer.name for layer in recipe.base.layers if layer.trainable and layer.weights]
    assert trainable == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert count == 3
    unfreeze_top(recipe.base, "2", "vgg16")  # last two layers: block5_conv3 and block5_pool
    assert [layer.name for layer in recipe.base.layers if layer.trainable and layer.weights] == ["block5_conv3"]


def test_fine_tune_from_an_unknown_layer_is_a_config_error(recipe) -> None:
    from training.model import unfreeze_top

    with pytest.raises(TrainConfigError, match="no layer"):
        unfreeze_top(recipe.base, "block9", "vgg16")
    with pytest.raises(TrainConfigError, match="unfreezes nothing"):
        unfreeze_top(recipe.base, "0", "vgg16")


@pytest.mark.parametrize(
    ("base", "module"),
    [("resnet50", "resnet50"), ("mobilenet_v2", "mobilenet_v2"), ("efficientnet_b0", "efficientnet")],
)
def test_every_base_builds_with_its_own_preprocessing(base: str, module: str) -> None:
    import keras

    from training.model import build_classifier

    classifier = build_classifier(TrainConfig(base=base, head="gap", dense_units=0, **SMALL), num_classes=2)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    preprocess = getattr(keras.applications, module).preprocess_input
    expected = classifier.head(classifier.base(preprocess(pixels.copy()), training=False))
    np.testing.assert_allclose(classifier.model(pixels, training=False), expected, rtol=1e-5, atol=1e-6)
    assert classifier.model.output_shape == (None, 2)
