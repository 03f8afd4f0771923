"""Training runs on tiny generated data: skew-free export, reproducibility, feature cache ≡ end to end, resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.training.small import small_run
from tlserve import contract
from training.config import RunOptions, TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.sample import SampleSpec, write_sample

    root = tmp_path_factory.mktemp("data") / "shapes"
    write_sample(root, SampleSpec(classes=3, per_class=12, size=40, seed=1))
    return root


def tiny_config(dataset: Path, runs_dir: Path, **changes: object) -> tuple[TrainConfig, RunOptions]:
    return small_run(dataset, runs_dir, name="tiny", **{"epochs": 2, "dense_units": 16, "seed": 7, **changes})


@pytest.fixture(scope="module")
def cached_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    from training.train import train

    return train(*tiny_config(dataset, tmp_path_factory.mktemp("runs")), progress=False)


def head_weights(result) -> list[np.ndarray]:
    return [np.asarray(w) for w in result.classifier.head.get_weights()]


def test_same_seed_gives_the_same_model(cached_run, dataset: Path, tmp_path: Path) -> None:
    from training.train import train

    again = train(*tiny_config(dataset, tmp_path), progress=False)
    for first, second in zip(head_weights(cached_run), head_weights(again), strict=True):
        np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)


def test_feature_cache_and_end_to_end_learn_the_same_head(cached_run, dataset: Path, tmp_path: Path) -> None:
    import keras

    from training.model import build_classifier
    from training.train import train

    end_to_end = train(*tiny_config(dataset, tmp_path, feature_cache=False), progress=False)
    keras.utils.set_random_seed(cached_run.config.seed)  # what train() does first: the same initial head
    initial = [np.asarray(w) for w in build_classifier(cached_run.config, 3).head.get_weights()]
    for cached, direct, start in zip(head_weights(cached_run), head_weights(end_to_end), initial, strict=True):
        assert not np.allclose(cached, start), "phase 1 must have changed the head"
        np.testing.assert_allclose(cached, direct, rtol=1e-4, atol=1e-5)


def test_exported_version_matches_the_in_process_model_on_the_same_files(cached_run, tmp_path: Path) -> None:
    import tensorflow as tf

    from training.data import scan_dataset
    from training.features import pixel_dataset
    from training.publish import export_run

    export_run(cached_run, tmp_path / "1")
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    records = scan_dataset(Path(cached_run.run.data), progress=False).records[:10]
    pixels = np.concatenate([x.numpy() for x, _ in pixel_dataset(records, cached_run.config, 3, shuffle=False)])
    in_process = cached_run.classifier.model(pixels, training=False).numpy()
    served = loaded.signatures[contract.SIGNATURE_BYTES](
        image_bytes=tf.constant([record.path.read_bytes() for record in records])
    )[contract.OUTPUT_PROBABILITIES].numpy()
    assert np.abs(served - in_process).max() <= 1e-6


def test_run_writes_checkpoint_history_tensorboard_and_reports(cached_run) -> None:
    run_dir = cached_run.run_dir
    assert (run_dir / "phase1" / "checkpoint" / "last.npz").is_file()
    assert any((run_dir / "phase1" / "tensorboard").rglob("events.out.tfevents*"))
    for name in ("report.md", "metrics.json", "confusion_matrix.json", "confusion_matrix.png", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert cached_run.metrics["examples"] == len(cached_run.test_paths) > 0


def test_resume_continues_from_the_last_checkpoint(dataset: Path, tmp_path: Path) -> None:
    from training.train import train

    train(*tiny_config(dataset, tmp_path, epochs=1), progress=False)
    resumed = train(*tiny_config(dataset, tmp_path, epochs=3, resume=True), progress=False)
    run_dirs = [p for p in (tmp_path / "tiny").iterdir() if p.is_dir()]
    assert run_dirs == [resumed.run_dir], "--resume must reuse the interrupted run's directory"
    with open(resumed.run_dir / "phase1" / "history.csv", newline="") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2], "the resumed run continues at epoch 2, not from scratch"
    steps_per_epoch = -(-sum(1 for r in _train_records(dataset)) // 8)
    assert int(resumed.classifier.head.optimizer.iterations.numpy()) == 3 * steps_per_epoch


def _train_records(dataset: Path):
    from training.data import scan_dataset

    return scan_dataset(dataset, progress=False).split("train")


def test_resume_without_an_earlier_run_is_a_usage_error(dataset: Path, tmp_path: Path) -> None:
    from training.config import TrainConfigError
    from training.train import train

    with pytest.raises(TrainConfigError, match="no earlier run"):
        train(*tiny_config(dataset, tmp_path, resume=True), progress=False)


def _in_shape_classes(files: dict[str, tuple[bytes, str]]) -> dict[str, bytes]:
    """The shared builders' cat/ and dog/ files, moved into this dataset's circle/ and square/ folders."""
    folder = {"cat": "circle", "dog": "square"}
    return {f"{folder[path.split('/')[0]]}/{path.split('/', 1)[1]}": data for path, (data, _) in files.items()}


def test_every_bad_kind_is_skipped_by_reason_and_every_odd_kind_is_trained_and_evaluated(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import Counter

    import training.features as features
    import training.phases as phases
    from tests.training.imagefiles import bad_files, odd_files
    from training.data import scan_dataset
    from training.train import SPLITS, train

    dirty = tmp_path / "dirty"
    shutil.copytree(dataset, dirty)
    bad, odd = _in_shape_classes(bad_files()), _in_shape_classes(odd_files())
    for rel_path, data in (bad | odd).items():
        (dirty / rel_path).write_bytes(data)
    pixel_dataset, extract_features = features.pixel_dataset, features.extract_features
    fed: list[str] = []  # every file the run hands to the input pipeline (train, val, test)
    extracted: list[int] = []  # rows of base features per pass (phase 1: train + val; then test)

    def pixel_spy(records, *args, **kwargs):
        fed.extend(record.rel_path for record in records)
        return pixel_dataset(records, *args, **kwargs)

    def extract_spy(*args, **kwargs):
        batches = list(extract_features(*args, **kwargs))
        extracted.append(sum(len(batch) for batch in batches))
        return iter(batches)

    monkeypatch.setattr(phases, "pixel_dataset", pixel_spy)
    monkeypatch.setattr(features, "extract_features", extract_spy)  # the store calls it
    monkeypatch.setattr(features, "pixel_dataset", pixel_spy)  # evaluate_run imports it from here
    result = train(*tiny_config(dirty, tmp_path / "runs", epochs=1), progress=False)

    expected_skips = Counter(reason.split(" (")[0] for _, reason in bad_files().values())
    assert result.skipped == dict(expected_skips)  # 0-byte, truncated JPEG/PNG, not an image, 2 bombs
    assert not set(bad) & set(fed), "a skipped file reached the pipeline"
    assert set(odd) <= set(fed), "every odd file is converted and used"
    splits = {name: [r.rel_path for r in scan_dataset(dirty, progress=False).split(name)] for name in SPLITS}
    assert set(odd) & set(splits["train"]), "some odd files must land in the training split"
    # odd training files are training examples: phase 1's one pass covers train + val
    assert extracted[0] == len(splits["train"]) + len(splits["val"])
    assert result.metrics["examples"] == len(splits["test"])  # and odd test files are evaluated
