"""Fixtures shared across the suite: a small real model version for serving tests."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Hypothesis profiles. "ci" (the default, for `make test` and CI alike) makes every property test deterministic:
# derandomize=True derives the examples from the test itself, so each run checks the same examples; no example
# database (nothing carried over between runs or checkouts); no per-example deadline and no too_slow health check,
# the two timing checks a loaded 2-core runner could trip. Tests' own @settings (max_examples, deadline) still
# apply on top. `HYPOTHESIS_PROFILE=explore pytest ...` turns random exploration (and the local database) back on,
# for hunting new counterexamples by hand; a failure found there becomes an @example in the test.
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def without_tlserve_environment() -> Iterator[None]:
    """No TLSERVE_* variable of the developer's shell reaches the tests or the processes they start.

    Settings read the environment, so an exported TLSERVE_API_KEYS would turn gateway tests into 401s. Session
    scope, so session and module fixtures (the e2e gateways) are covered too; a test that wants a variable sets it
    with monkeypatch.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("TLSERVE_")]:
            patch.delenv(name)
        yield


CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = 32


def encode_image(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def random_images(count: int, *, seed: int = 0, fmt: str = "PNG") -> list[bytes]:
    """Encoded RGB images of assorted sizes (the model resizes them itself)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        height, width = rng.integers(24, 80, size=2)
        images.append(encode_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), fmt))
    return images


def build_tiny_classifier(num_classes: int = len(CLASSES), image_size: int = IMAGE_SIZE, seed: int = 0):
    """VGG16 (weights=None) + pooling head at 32 px: the real architecture, small enough for CI."""
    import keras

    from training.preprocessing import preprocess_pixels

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Lambda(lambda t: preprocess_pixels("vgg16", t))(inputs)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    base.trainable = False
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


PublishFn = Callable[..., int]


@pytest.fixture(scope="session")
def tiny_classifier():
    return build_tiny_classifier()


@pytest.fixture(scope="session")
def exported_version(tmp_path_factory: pytest.TempPathFactory, tiny_classifier) -> Path:
    """One exported version (a SavedModel directory), built once per test session; copy it, don't modify it."""
    from training.export import ExportSpec, export_saved_model

    out = tmp_path_factory.mktemp("exported") / "1"
    out.mkdir()
    export_saved_model(
        tiny_classifier,
        ExportSpec(classes=CLASSES, image_size=IMAGE_SIZE, base="vgg16"),
        out,
        warmup_images=random_images(3, seed=99),
    )
    return out


@pytest.fixture
def model_repo(tmp_path: Path, exported_version: Path) -> Callable[..., Path]:
    """Make a models/ directory holding copies of the session's exported version: model_repo(versions=(1,))."""
    import shutil

    def make(name: str = "demo", versions: tuple[int, ...] = (1,)) -> Path:
        models_dir = tmp_path / "models"
        for version in versions:
            shutil.copytree(exported_version, models_dir / name / str(version))
        return models_dir

    return make
