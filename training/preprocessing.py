"""The one image-preprocessing path shared by the training input pipeline and the exported graph.

Training decodes files with `decode_and_resize` inside tf.data; the exported `serving_default`
signature runs the very same function on request bytes. The base network's own `preprocess_input`
(caffe-style BGR mean subtraction for VGG16, not the classic 1/255) is applied by `preprocess_pixels`,
which the Keras model calls as its first layer, so pixels in [0, 255] are the only interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

Tensor = Any  # tf.Tensor; TensorFlow ships no type information.

# Bases tlserve knows, with the keras.applications module whose preprocess_input each one needs.
BASE_MODULES: dict[str, str] = {
    "vgg16": "vgg16",
    "resnet50": "resnet50",
    "mobilenet_v2": "mobilenet_v2",
    "efficientnet_b0": "efficientnet",
}


def decode_image(image_bytes: Tensor) -> Tensor:
    """Encoded JPEG/PNG/BMP/GIF bytes → uint8 RGB [H, W, 3] (grayscale expanded, alpha dropped, first GIF frame)."""
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: Tensor, image_size: int) -> Tensor:
    """Any RGB image → float32 [image_size, image_size, 3] in [0, 255], bilinear, aspect not kept."""
    resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


def decode_and_resize(image_bytes: Tensor, image_size: int) -> Tensor:
    """The training pipeline's and the serving graph's shared first step."""
    return resize_image(decode_image(image_bytes), image_size)


def preprocess_fn(base: str) -> Callable[[Tensor], Tensor]:
    """The base network's own `preprocess_input` (float32 RGB [0, 255] in)."""
    import keras

    try:
        module_name = BASE_MODULES[base]
    except KeyError:
        raise ValueError(f"unknown base {base!r}; choose one of {sorted(BASE_MODULES)}") from None
    module = getattr(keras.applications, module_name)
    fn: Callable[[Tensor], Tensor] = module.preprocess_input
    return fn


def preprocess_pixels(base: str, pixels: Tensor) -> Tensor:
    """float32 RGB [..., 3] in [0, 255] → what `base` was trained on."""
    return preprocess_fn(base)(tf.cast(pixels, tf.float32))
