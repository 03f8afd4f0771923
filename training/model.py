"""The classifier: pixels [0, 255] → the base's own preprocessing → frozen pretrained base → a small head.

The base and the head are separate Keras models inside one, so phase 1 can train the head alone on
cached base features and phase 2 can fine-tune the composed model, both updating the same weights.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from training.config import TrainConfig, TrainConfigError
from training.preprocessing import preprocess_pixels

logger = logging.getLogger(__name__)

BASE_CONSTRUCTORS = {
    "vgg16": "VGG16",
    "resnet50": "ResNet50",
    "mobilenet_v2": "MobileNetV2",
    "efficientnet_b0": "EfficientNetB0",
}
# Where phase 2 starts unfreezing by default: the last convolutional stage of each base.
DEFAULT_FINE_TUNE_FROM = {
    "vgg16": "block5",
    "resnet50": "conv5",
    "mobilenet_v2": "block_16",
    "efficientnet_b0": "block7",
}


@keras.saving.register_keras_serializable(package="tlserve")
class Preprocess(keras.layers.Layer):  # type: ignore[misc]
    """The base network's own `preprocess_input`, as a layer so it ships inside the exported graph."""

    def __init__(self, base: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # keep ImageNet mean subtraction exact under mixed precision
        super().__init__(**kwargs)
        self.base = base

    def call(self, pixels: Any) -> Any:
        return preprocess_pixels(self.base, pixels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base": self.base}


@dataclass
class Classifier:
    """The composed model and its parts (they share weights: training one trains the other)."""

    model: Any  # pixels → probabilities (what is exported)
    base: Any  # the pretrained network
    feature_extractor: Any  # pixels → base features
    head: Any  # base features → probabilities


def load_base(config: TrainConfig) -> Any:
    """The pretrained base without its top; weights that cannot be had are an error, never a silent fallback.

    A random base trains a head on noise and scores near chance, so it is only ever used on request (`--weights none`).
    """
    constructor = getattr(keras.applications, BASE_CONSTRUCTORS[config.base])
    shape = (config.image_size, config.image_size, 3)
    weights = config.weights
    if weights.lower() == "none":
        return constructor(include_top=False, weights=None, input_shape=shape)
    if weights.lower() != "imagenet":
        if not Path(weights).is_file():
            raise TrainConfigError(f"--weights: no such file: {weights}")
        return constructor(include_top=False, weights=weights, input_shape=shape)
    try:
        # Keras prints "Downloading data from ..." and its progress bar to stdout, which `--json` keeps for the result.
        with contextlib.redirect_stdout(sys.stderr):
            return constructor(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as exc:  # keras raises a bare Exception for a failed download
        raise TrainConfigError(weights_unavailable_message(config.base, _short_reason(exc))) from exc


def weights_unavailable_message(base: str, reason: str) -> str:
    """One line naming the three ways out of a failed ImageNet download."""
    return (
        f"ImageNet weights for {base} could not be downloaded ({reason}); give a weights file with "
        "--weights PATH, pre-fill the Keras cache (~/.keras/models, or $KERAS_HOME/models), "
        "or train a random base explicitly with --weights none"
    )


def _short_reason(exc: Exception) -> str:
    """Keras says "URL fetch failure on <long url>: None -- <cause>"; keep what fits on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if " -- " in text:
        text = f"{text.split(' on ', 1)[0]}: {text.rsplit(' -- ', 1)[-1]}"
    return text[:160]


def build_head(feature_shape: tuple[int, ...], num_classes: int, config: TrainConfig) -> Any:
    """Flatten|GAP → [Dense(units, relu) (+BN)] → [Dropout] → Dense(C, softmax); recipe = flatten, 1024, no dropout."""
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    features = keras.Input(feature_shape, name="features")
    pool = keras.layers.Flatten() if config.head == "flatten" else keras.layers.GlobalAveragePooling2D()
    x = pool(features)
    if config.dense_units > 0:
        activation = None if config.batch_norm else "relu"
        x = keras.layers.Dense(config.dense_units, activation=activation, kernel_regularizer=regularizer)(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation("relu")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, seed=config.seed)(x)
    # float32 output even under mixed precision: softmax in float16 saturates.
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer, dtype="float32")(x)
    return keras.Model(features, outputs, name="head")


def build_classifier(config: TrainConfig, num_classes: int, *, base: Any = None) -> Classifier:
    """The whole model; the base is frozen and always runs in inference mode.

    `base`: reuse an already built base (a sweep builds one per base/weights/size/seed). The head's initial
    weights depend on the seed alone, whether the base was built now or reused.
    """
    if base is None:
        base = load_base(config)
    keras.utils.set_random_seed(config.seed)  # building the base drew from the seed generator: start afresh
    base.trainable = False
    pixels = keras.Input((config.image_size, config.image_size, 3), name="pixels")
    # training=False: BatchNormalization keeps its ImageNet statistics, also when phase 2 unfreezes layers.
    features = base(Preprocess(config.base)(pixels), training=False)
    feature_extractor = keras.Model(pixels, features, name="feature_extractor")
    head = build_head(tuple(features.shape[1:]), num_classes, config)
    model = keras.Model(pixels, head(features), name=f"tlserve_{config.base}")
    return Classifier(model=model, base=base, feature_extractor=feature_extractor, head=head)


def unfreeze_top(base: Any, fine_tune_from: str, base_name: str) -> int:
    """Make the top of the base trainable (from a layer name prefix, or the last K layers); returns how many.

    BatchNormalization layers stay frozen: their moving statistics must not drift on a small dataset.
    """
    layers = base.layers
    start = _first_unfrozen_index(layers, fine_tune_from or DEFAULT_FINE_TUNE_FROM[base_name])
    base.trainable = True
    count = 0
    for index, layer in enumerate(layers):
        trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        count += int(trainable and bool(layer.weights))
    return count


def check_fine_tune_from(base: Any, fine_tune_from: str, base_name: str) -> None:
    """Raise the TrainConfigError `unfreeze_top` would, without changing the base (so before phase 1 runs)."""
    _first_unfrozen_index(base.layers, fine_tune_from or DEFAULT_FINE_TUNE_FROM[base_name])


def _first_unfrozen_index(layers: list[Any], fine_tune_from: str) -> int:
    if fine_tune_from.isdigit():
        if int(fine_tune_from) == 0:
            raise TrainConfigError("--fine-tune-from 0 unfreezes nothing; give K >= 1 or a layer name")
        return max(0, len(layers) - int(fine_tune_from))
    for index, layer in enumerate(layers):
        if layer.name.startswith(fine_tune_from):
            return index
    raise TrainConfigError(f"--fine-tune-from: no layer of the base is named {fine_tune_from!r}*")
