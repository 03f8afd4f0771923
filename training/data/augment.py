"""Training-time augmentation as Keras layers (active only in `fit`, identity at inference and in exports).

Put the block inside the model, after the input and before `preprocess_pixels`, and feed it the cached,
un-augmented pipeline: each epoch then sees fresh random transforms (augmenting before `cache()` would replay
epoch one's). Inputs and outputs are float32 RGB pixels in [0, 255].
"""

from __future__ import annotations

from typing import Any


def augmentation_layers(
    flip: bool = True,
    rotation: float = 0.1,
    zoom: float = 0.1,
    translation: float = 0.1,
    contrast: float = 0.1,
    seed: int = 0,
) -> Any:
    """A keras.Sequential named "augmentation"; a zero factor (or flip=False) leaves that layer out."""
    import keras

    layers: list[Any] = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, seed=seed + 1))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, seed=seed + 2))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation, seed=seed + 3))
    if contrast:
        # value_range matches the pipeline's pixels, so contrast changes keep them inside [0, 255].
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 4))
    return keras.Sequential(layers, name="augmentation")
