"""The exported SavedModel honours the contract in tlserve.contract and training.export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CLASSES, IMAGE_SIZE, random_images
from tlserve import contract


@pytest.fixture(scope="module")
def loaded(exported_version: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(exported_version))


def test_serving_default_takes_encoded_bytes_and_returns_contract_outputs(loaded) -> None:
    import tensorflow as tf

    signature = loaded.signatures[contract.SIGNATURE_BYTES]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == [contract.INPUT_BYTES]
    assert inputs[contract.INPUT_BYTES].dtype == tf.string
    outputs = signature(**{contract.INPUT_BYTES: tf.constant(random_images(4))})
    assert outputs[contract.OUTPUT_PROBABILITIES].shape == (4, len(CLASSES))
    assert outputs[contract.OUTPUT_CLASSES].shape == (4, contract.top_k_for(len(CLASSES)))
    np.testing.assert_allclose(outputs[contract.OUTPUT_PROBABILITIES].numpy().sum(axis=1), 1.0, rtol=1e-5)
    scores = outputs[contract.OUTPUT_SCORES].numpy()
    assert (np.diff(scores, axis=1) <= 0).all(), "top-k scores must be sorted descending"


def test_classes_output_names_the_argmax_class(loaded) -> None:
    import tensorflow as tf

    outputs = loaded.signatures[contract.SIGNATURE_BYTES](image_bytes=tf.constant(random_images(5, seed=3)))
    argmax = outputs[contract.OUTPUT_PROBABILITIES].numpy().argmax(axis=1)
    top1 = [name.decode() for name in outputs[contract.OUTPUT_CLASSES].numpy()[:, 0]]
    assert top1 == [CLASSES[i] for i in argmax]


def test_predict_pixels_agrees_with_serving_default_on_model_sized_images(loaded) -> None:
    import tensorflow as tf

    from tests.conftest import encode_image

    pixels = np.random.default_rng(1).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    encoded = [encode_image(p) for p in pixels]
    by_bytes = loaded.signatures[contract.SIGNATURE_BYTES](image_bytes=tf.constant(encoded))
    by_pixels = loaded.signatures[contract.SIGNATURE_PIXELS](pixels=tf.constant(pixels))
    np.testing.assert_allclose(
        by_bytes[contract.OUTPUT_PROBABILITIES].numpy(),
        by_pixels[contract.OUTPUT_PROBABILITIES].numpy(),
        atol=1e-6,
    )


def test_undecodable_bytes_fail_with_invalid_argument(loaded) -> None:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures[contract.SIGNATURE_BYTES](image_bytes=tf.constant([b"not an image"]))


def test_version_carries_labels_metadata_and_warmup(exported_version: Path) -> None:
    labels = (exported_version / contract.LABELS_FILE).read_text().splitlines()
    assert labels == list(CLASSES)
    metadata = json.loads((exported_version / contract.METADATA_FILE).read_text())
    assert metadata["classes"] == list(CLASSES)
    assert metadata["image_size"] == IMAGE_SIZE
    assert metadata["base"] == "vgg16"
    assert (exported_version / "fingerprint.pb").is_file()


def test_warmup_file_holds_predict_logs_for_serving_default(exported_version: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(exported_version / contract.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 4  # three single-image requests and one batch of all three
    log = prediction_log_pb2.PredictionLog.FromString(records[-1])
    request = log.predict_log.request
    assert request.model_spec.signature_name == contract.SIGNATURE_BYTES
    assert len(request.inputs[contract.INPUT_BYTES].string_val) == 3


def test_variables_are_written_once(exported_version: Path) -> None:
    variables = sum(p.stat().st_size for p in (exported_version / "variables").iterdir())
    # VGG16's conv layers are 14.7 M float32 parameters (58.9 MB); keras.Model.export would write them twice.
    assert 55e6 < variables < 65e6
