"""One training run: scan the data, phase 1 (frozen base → head), optional phase 2 (fine-tune), evaluate.

Phase 1 fits the head on base features from the persistent feature store (the base is frozen, so its output
per image never changes; with --augment on K stored augmented views); --no-feature-cache runs it end to end.
Each phase checkpoints every epoch into the run directory, which is what `--resume` continues from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.config import RunOptions, TrainConfig, TrainConfigError
from training.model import Classifier, build_classifier, check_fine_tune_from, unfreeze_top
from training.warmstart import WarmStart, restore_weights

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class TrainResult:
    """What a run produced: the model, its held-out metrics and where its artefacts are."""

    config: TrainConfig  # the hyper-parameters (what a version's metadata records)
    run: RunOptions
    classes: list[str]
    classifier: Classifier
    metrics: dict[str, Any]  # test split: accuracy, per-class P/R/F1, confusion matrix
    val_accuracy: float | None
    run_dir: Path
    data_fingerprint: str
    test_paths: list[Path]
    skipped: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    scan: Any = None  # the DatasetScan the run used (its split is the holdout retrain compares on)
    warm_started: bool = False
    features: dict[str, int] = field(default_factory=dict)  # phase 1: {"reused": R, "computed": C} images


def train(
    config: TrainConfig,
    run: RunOptions,
    *,
    progress: bool = True,
    warm_start: WarmStart | None = None,
    base: Any = None,
) -> TrainResult:
    """Run both phases on `run.data` and evaluate on the test split; publishing is the caller's choice.

    With `warm_start` (and the same classes) the model starts from that version's weights instead of the base's.
    `base`: an already built, never fine-tuned base of this config's base/weights/size/seed (a sweep's runs share one).
    """
    import keras

    from training.phases import open_feature_source

    started = time.monotonic()
    scan = scan_data(config, Path(run.data), progress=progress)
    splits = {name: [r for r in scan.records if r.split == name] for name in SPLITS}
    if not splits["train"]:
        raise TrainConfigError(f"{run.data}: no usable training images")
    warm = warm_start is not None and warm_start.classes == list(scan.classes)
    if warm:
        config = dataclasses.replace(config, weights="none")  # the version's weights replace the base's anyway
    elif warm_start is not None:
        logger.warning("classes changed (%s -> %s): no warm start", warm_start.classes, scan.classes)
    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.mixed_precision), distribution_scope():
        classifier = build_classifier(config, len(scan.classes), base=base)
        if config.fine_tune_epochs > 0:  # a bad --fine-tune-from fails now, not after phase 1 trained
            check_fine_tune_from(classifier.base, config.fine_tune_from, config.base)
        run_dir = prepare_run_dir(config, run)
        if warm and warm_start is not None:
            restore_weights(classifier.model, warm_start.version_dir)
            logger.info("warm start from %s", warm_start.version_dir)
        source = open_feature_source(classifier, config, run) if config.feature_cache else None
        features = run_phases(classifier, config, splits, scan.classes, run_dir, progress=progress, source=source)
    if config.fine_tune_epochs > 0:
        source = None  # phase 2 changed the base: its stored features are no longer this model's
    metrics, val_accuracy = evaluate_run(
        classifier, config, splits, scan.classes, run_dir, title=run.name, source=source
    )
    return TrainResult(
        config=config,
        run=run,
        classes=list(scan.classes),
        classifier=classifier,
        metrics=metrics,
        val_accuracy=val_accuracy,
        run_dir=run_dir,
        data_fingerprint=scan.fingerprint,
        test_paths=[Path(r.path) for r in splits["test"] if not r.needs_conversion],
        skipped=skipped_by_reason(scan),
        duration_s=time.monotonic() - started,
        scan=scan,
        warm_started=warm,
        features=features,
    )


def scan_data(config: TrainConfig, root: Path, *, progress: bool) -> Any:
    """The data engineer's scan of `root`, with its skipped files reported in one line."""
    from training.data import DatasetError, scan_dataset

    if not root.is_dir():
        raise TrainConfigError(f"dataset folder not found: {root}")
    try:
        scan = scan_dataset(
            root, val_fraction=config.val_fraction, test_fraction=config.test_fraction, progress=progress
        )
    except DatasetError as exc:
        raise TrainConfigError(str(exc)) from None
    if len(scan.classes) < 2:
        raise TrainConfigError(f"{root}: need at least 2 class folders, found {len(scan.classes)}")
    skipped = skipped_by_reason(scan)
    if skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        logger.warning("skipped %d unusable files (%s); see `tlserve data check`", sum(skipped.values()), reasons)
    return scan


def skipped_by_reason(scan: Any) -> dict[str, int]:
    counts: dict[str, int] = scan.bad_reasons()
    return counts


def prepare_run_dir(config: TrainConfig, run: RunOptions) -> Path:
    """A new run directory (its config.json: the hyper-parameters; run.json: the run options), or with --resume
    the newest existing one of this model name."""
    parent = Path(run.runs_dir) / (run.name or "model")
    if run.resume:
        runs = sorted(p for p in parent.glob("*") if (p / "config.json").is_file()) if parent.is_dir() else []
        if not runs:
            raise TrainConfigError(f"--resume: no earlier run under {parent}")
        logger.info("resuming %s", runs[-1])
        return runs[-1]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = parent / stamp
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    (run_dir / "run.json").write_text(json.dumps(run.to_dict(), indent=2) + "\n", encoding="utf-8")
    return run_dir


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """mixed_float16 for this run only (the policy is process-global in Keras)."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def distribution_scope() -> Iterator[None]:
    """MirroredStrategy when several GPUs are visible; the default (no-op) strategy otherwise."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if len(gpus) > 1:
        logger.info("MirroredStrategy over %d GPUs", len(gpus))
    with strategy.scope():
        yield


def run_phases(
    classifier: Classifier,
    config: TrainConfig,
    splits: dict[str, list[Any]],
    classes: Sequence[str],
    run_dir: Path,
    *,
    progress: bool,
    source: Any = None,
) -> dict[str, int]:
    """Phase 1 on stored features (from `source`) or end to end; then phase 2 if asked. Returns phase 1's counts."""
    from training.phases import fine_tune, fit_head_end_to_end, fit_head_on_features

    class_weight = class_weights_for(splits["train"], len(classes), config.class_weights)
    features: dict[str, int] = {}
    if config.epochs > 0:
        if source is not None:
            counts = fit_head_on_features(
                classifier, config, splits, run_dir / "phase1", class_weight, progress=progress, source=source
            )
            features = counts.to_dict()
        else:
            fit_head_end_to_end(classifier, config, splits, run_dir / "phase1", class_weight, progress=progress)
    if config.fine_tune_epochs > 0:
        unfrozen = unfreeze_top(classifier.base, config.fine_tune_from, config.base)
        logger.info("phase 2: fine-tuning %d layers of %s", unfrozen, config.base)
        fine_tune(classifier, config, splits, run_dir / "phase2", class_weight, progress=progress)
    return features


def class_weights_for(records: Sequence[Any], num_classes: int, mode: str) -> dict[int, float] | None:
    """Inverse-frequency weights (balanced: n / (C * n_c)); exactly 1.0 each on balanced data."""
    if mode == "none":
        return None
    counts = np.bincount([int(r.label) for r in records], minlength=num_classes)
    total = counts.sum()
    return {index: float(total / (num_classes * count)) if count else 1.0 for index, count in enumerate(counts)}


def evaluate_run(
    classifier: Classifier,
    config: TrainConfig,
    splits: dict[str, list[Any]],
    classes: Sequence[str],
    run_dir: Path,
    *,
    title: str = "",
    source: Any = None,
) -> tuple[dict[str, Any], float | None]:
    """Test-split metrics and reports into the run dir, and the validation accuracy (what a sweep ranks by).

    With a feature `source` (the base was not fine-tuned, so its features are still the stored ones) the
    splits go through the head on stored features: the same probabilities as the whole model, without
    running the base again over images it has already seen.
    """
    from training.evaluate import classification_metrics, read_history, write_reports

    val_accuracy = None
    if splits["val"]:
        probabilities, labels = predict_split(classifier, config, splits["val"], len(classes), source)
        val_accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    if not splits["test"]:
        logger.warning("the test split is empty; no held-out metrics")
        return {}, val_accuracy
    probabilities, labels = predict_split(classifier, config, splits["test"], len(classes), source)
    metrics = classification_metrics(labels, probabilities, classes)
    metrics["val_accuracy"] = val_accuracy
    write_reports(run_dir, metrics, history=read_history(run_dir), title=f"{title or 'model'} ({config.base})")
    return metrics, val_accuracy


def predict_split(
    classifier: Classifier, config: TrainConfig, records: list[Any], num_classes: int, source: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of one split: through the head on stored features, else the whole model."""
    from training.features import labels_of, pixel_dataset, predict_entries
    from training.phases import stored_split

    if source is not None:
        paths, labels, _ = stored_split(source, records, config, num_classes)
        return predict_entries(classifier.head, paths, config), labels
    dataset = pixel_dataset(records, config, num_classes, shuffle=False, cache=False)
    return np.asarray(classifier.model.predict(dataset, verbose=0)), labels_of(dataset)
