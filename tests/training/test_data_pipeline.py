"""The tf.data pipeline: serving's exact decode, every usable odd file, determinism, cache before augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.training.test_data_checks import bad_files, odd_files
from training.data import augmentation_layers, make_dataset, scan_dataset
from training.data.checks import to_png_bytes
from training.data.sample import SampleSpec, write_sample
from training.preprocessing import decode_and_resize

SIZE = 32


@pytest.fixture(scope="module")
def dirty_scan(tmp_path_factory: pytest.TempPathFactory):
    """A dataset of good, odd and unusable files (the unusable ones must never reach the pipeline)."""
    root = tmp_path_factory.mktemp("pipeline-dirty")
    write_sample(root, SampleSpec(classes=2, per_class=6, size=48, seed=3))
    for rel_path, (data, _) in (bad_files() | odd_files()).items():
        target = root / rel_path.replace("cat/", "circle/").replace("dog/", "square/")
        target.write_bytes(data)
    return scan_dataset(root, progress=False)


@pytest.fixture(scope="module")
def sample_scan(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pipeline-sample")
    write_sample(root, SampleSpec(classes=3, per_class=10, size=40, seed=1))
    return scan_dataset(root, val_fraction=0.0, test_fraction=0.0, progress=False)


def _all(dataset) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(pixels), np.concatenate(labels)


def test_pipeline_pixels_equal_the_serving_decode_of_the_same_files(dirty_scan) -> None:
    records = dirty_scan.records
    assert len(dirty_scan.bad) == len(bad_files())
    pixels, labels = _all(make_dataset(records, SIZE, 4, num_classes=2, shuffle=False, seed=0))
    assert len(pixels) == len(records)  # every usable file, odd ones included, and no unusable one
    for record, got, label in zip(records, pixels, labels, strict=True):
        data = record.path.read_bytes()
        served = decode_and_resize(tf.constant(to_png_bytes(data) if record.needs_conversion else data), SIZE)
        assert np.max(np.abs(got - served.numpy())) <= 1e-6, record.rel_path
        assert label == record.label


def test_pil_converted_file_keeps_its_pixels(dirty_scan) -> None:
    (tiff,) = [record for record in dirty_scan.records if record.needs_conversion]
    png_twin = next(record for record in dirty_scan.records if record.rel_path == "square/png-named.jpg")
    converted, twin = (
        make_dataset([record], SIZE, 1, num_classes=2, shuffle=False, seed=0) for record in (tiff, png_twin)
    )
    # Both files hold the same pixels (one as TIFF, one as PNG): conversion must not shift colours.
    assert np.array_equal(next(iter(converted))[0].numpy(), next(iter(twin))[0].numpy())


def test_batches_have_the_documented_shapes_and_types(sample_scan) -> None:
    dataset = make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=True, seed=0)
    batches = list(dataset)
    assert [len(y) for _, y in batches] == [8, 8, 8, 6]
    pixels, labels = batches[0]
    assert pixels.shape == (8, SIZE, SIZE, 3)
    assert pixels.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(pixels)) <= float(tf.reduce_max(pixels)) <= 255.0


def _epochs(dataset, count: int) -> list[list[int]]:
    return [np.concatenate([y.numpy() for _, y in dataset]).tolist() for _ in range(count)]


def _order(dataset) -> list[float]:
    return [float(value) for x, _ in dataset for value in tf.reduce_sum(x, axis=[1, 2, 3]).numpy()]


def test_same_seed_same_order_and_each_epoch_reshuffles(sample_scan) -> None:
    def build(seed: int):
        return make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=True, seed=seed)

    first, again, other = build(5), build(5), build(6)
    assert [_order(first), _order(first)] == [_order(again), _order(again)]
    assert _order(build(5)) != _order(other)
    epochs = _epochs(build(5), 2)
    assert epochs[0] != epochs[1]
    assert sorted(epochs[0]) == sorted(epochs[1])


def test_without_shuffle_records_keep_their_order(sample_scan) -> None:
    _, labels = _all(make_dataset(sample_scan.records, SIZE, 7, num_classes=3, shuffle=False, seed=0))
    assert labels.tolist() == [record.label for record in sample_scan.records]


def test_cached_pixels_are_unaugmented_and_identical_every_epoch(sample_scan, tmp_path: Path) -> None:
    in_memory = make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=False, seed=0)
    on_disk = make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=False, seed=0, cache=tmp_path / "c")
    epoch_one = _all(in_memory)[0]
    assert np.array_equal(epoch_one, _all(in_memory)[0])
    assert np.array_equal(epoch_one, _all(on_disk)[0])
    assert any(path.name.startswith("c") for path in tmp_path.iterdir())  # the file cache was written


def test_augmentation_changes_pixels_only_in_training(sample_scan) -> None:
    pixels = next(iter(make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=False, seed=0)))[0]
    augment = augmentation_layers(seed=1)
    first, second = augment(pixels, training=True), augment(pixels, training=True)
    assert not np.allclose(first, second)  # fresh randomness on every call (every epoch)
    assert np.array_equal(augment(pixels, training=False), pixels)
    assert float(tf.reduce_max(first)) <= 255.0


def test_augmentation_layers_follow_the_configuration() -> None:
    names = [type(layer).__name__ for layer in augmentation_layers(rotation=0.2, zoom=0.0, contrast=0.0).layers]
    assert names == ["RandomFlip", "RandomRotation", "RandomTranslation"]
    assert augmentation_layers(flip=False, rotation=0, zoom=0, translation=0, contrast=0).layers == []


def test_empty_split_gives_an_empty_dataset() -> None:
    dataset = make_dataset([], SIZE, 4, num_classes=2, shuffle=True, seed=0)
    assert list(dataset) == []
    assert dataset.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]


def test_labels_outside_the_classes_are_refused(sample_scan) -> None:
    with pytest.raises(ValueError, match="labels must lie in"):
        make_dataset(sample_scan.records, SIZE, 4, num_classes=2, shuffle=False, seed=0)


def test_cmyk_jpeg_decodes_to_its_true_colours_without_conversion() -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16, :, 0], rgb[16:, :, 1], rgb[:, :8, 2] = 200, 180, 90
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, "JPEG", quality=95)  # PIL writes Adobe-style inverted CMYK
    decoded = tf.io.decode_image(buffer.getvalue(), channels=3).numpy()
    assert np.abs(decoded.astype(int) - rgb).max() <= 2


def test_exported_model_on_raw_odd_files_matches_the_model_on_pipeline_pixels(
    dirty_scan, exported_version: Path, tiny_classifier
) -> None:
    from tests.conftest import IMAGE_SIZE
    from tlserve import contract

    records = [record for record in dirty_scan.records if not record.needs_conversion]
    assert {"circle/cmyk.jpg", "circle/animated.gif", "square/deep.png", "square/palette.png"} <= {
        record.rel_path for record in records
    }
    pixels, _ = _all(make_dataset(records, IMAGE_SIZE, 8, num_classes=2, shuffle=False, seed=0))
    in_process = tiny_classifier(pixels, training=False).numpy()
    serve = tf.saved_model.load(str(exported_version)).signatures[contract.SIGNATURE_BYTES]
    raw = tf.constant([record.path.read_bytes() for record in records])
    served = serve(**{contract.INPUT_BYTES: raw})[contract.OUTPUT_PROBABILITIES].numpy()
    assert np.abs(served - in_process).max() <= 1e-6


def test_images_that_do_not_fit_in_memory_are_decoded_every_epoch(sample_scan, monkeypatch, caplog) -> None:
    from training.data import pipeline

    cached = _all(make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=False, seed=0))
    monkeypatch.setattr(pipeline, "available_memory_bytes", lambda: 1000)

    def build():
        return make_dataset(sample_scan.records, SIZE, 8, num_classes=3, shuffle=True, seed=4)

    with caplog.at_level("WARNING", logger="training.data.pipeline"):
        uncached = build()
    assert "decoding every epoch instead" in caplog.text
    epochs = _epochs(uncached, 2)
    assert epochs == _epochs(build(), 2)  # still deterministic
    assert epochs[0] != epochs[1]  # still reshuffled every epoch
    pixels, labels = _all(uncached)
    assert sorted(map(float, pixels.sum(axis=(1, 2, 3)))) == sorted(map(float, cached[0].sum(axis=(1, 2, 3))))
    assert sorted(labels.tolist()) == sorted(cached[1].tolist())


def test_file_cache_with_shuffle_is_deterministic_and_complete(sample_scan, tmp_path: Path) -> None:
    def build(name: str):
        return make_dataset(
            sample_scan.records, SIZE, 8, num_classes=3, shuffle=True, seed=2, cache=tmp_path / name / "cache"
        )

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first, second = build("a"), build("b")
    assert _order(first) == _order(second)
    assert sorted(_epochs(first, 1)[0]) == sorted(record.label for record in sample_scan.records)
