"""The retrain's candidate: the baseline it must beat, its training config, warm-start training, holdout scoring.

Warm start restores the stable version's own variables (object-based, from its SavedModel's `variables/`)
into a classifier built with stable's recorded training config, so no side files are needed. Candidate and
stable are then scored by their exported `serving_default` on the grown dataset's test split; the path-hash
split keeps every old test image in that split as data is added, so stable never sees its holdout in training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion import gates
from promotion.gates import GateResult, Metrics
from promotion.inventory import read_metadata
from tlserve import contract, models_config
from tlserve.console import CommandError

logger = logging.getLogger(__name__)

# Stable's weights replace the base's in a warm start, so its recorded `weights` is not reused (a retrain that
# cannot warm-start, e.g. because classes changed, starts from the default weights or --weights).
_NOT_INHERITED = {"weights"}


@dataclass(frozen=True)
class Baseline:
    """The version the candidate must beat (None fields for a first model)."""

    version: int | None
    version_dir: Path | None
    classes: list[str]
    config: dict[str, Any]


def find_baseline(models_dir: Path, name: str) -> Baseline:
    """Stable if labelled, else the newest served version (what an unlabelled server serves), else nothing."""
    try:
        model = models_config.load_model(models_dir, name)
    except models_config.ModelsConfigError:
        return Baseline(None, None, [], {})
    base = models_config.resolve_base_path(models_config.config_path(models_dir), model.base_path)
    # Unlabelled, the server serves the newest of the entry's specific versions, or the newest on disk.
    version = model.labels.get("stable") or max(model.versions or contract.list_versions(base), default=None)
    if version is None:
        return Baseline(None, None, [], {})
    version_dir = base / str(version)
    metadata = read_metadata(version_dir)
    return Baseline(version, version_dir, gates.read_classes(version_dir), dict(metadata.get("config", {})))


def retrain_config(
    baseline: Baseline,
    *,
    data: Path,
    name: str,
    models_dir: Path,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(TrainConfig, RunOptions): stable's recorded hyper-parameters ← `config_file` (TOML) ← `overrides` (flags);
    data/name/models_dir from the retrain. Versions published before the split also recorded run options in their
    metadata; only hyper-parameters are read back."""
    from training.config import HYPERPARAMETERS, RUN_OPTIONS, build_run, load_toml

    inherited = set(HYPERPARAMETERS) - _NOT_INHERITED
    values = {key: value for key, value in baseline.config.items() if key in inherited}
    if config_file is not None:
        values.update(load_toml(config_file))
    chosen = {key: value for key, value in (overrides or {}).items() if key in {*HYPERPARAMETERS, *RUN_OPTIONS}}
    chosen.update(data=str(data), name=name, models_dir=str(models_dir), resume=False)
    return build_run(values, chosen, source=str(config_file or "stable's config + flags"))


def warm_train(config: Any, run: Any, baseline: Baseline) -> tuple[Any, Any, bool]:
    """training.train.train from stable's weights (same classes only); returns (TrainResult, scan, warm)."""
    from training.train import train
    from training.warmstart import WarmStart

    warm_start = None if baseline.version_dir is None else WarmStart(baseline.version_dir, list(baseline.classes))
    result = train(config, run, progress=False, warm_start=warm_start)
    return result, result.scan, result.warm_started


def evaluate_on_holdout(version_dir: Path, scan: Any, *, batch_size: int = 32) -> Metrics:
    """Accuracy and per-class recall of an exported version's serving_default on the scan's test split."""
    import numpy as np
    import tensorflow as tf

    from training.data.checks import to_png_bytes
    from training.evaluate import classification_metrics

    classes = gates.read_classes(version_dir)
    records = [record for record in scan.records if record.split == "test" and scan.classes[record.label] in classes]
    if not records:
        raise CommandError(f"{scan.root}: the test split is empty; cannot compare candidate and stable")
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_BYTES]
    batches = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        encoded = [to_png_bytes(r.path.read_bytes()) if r.needs_conversion else r.path.read_bytes() for r in chunk]
        outputs = signature(**{contract.INPUT_BYTES: tf.constant(encoded)})
        batches.append(outputs[contract.OUTPUT_PROBABILITIES].numpy())
    labels = np.array([classes.index(scan.classes[record.label]) for record in records])
    report = classification_metrics(labels, np.concatenate(batches), classes)
    recall = {name: row["recall"] for name, row in report["per_class"].items() if row["support"] > 0}
    return Metrics(accuracy=report["accuracy"], recall=recall, examples=report["examples"])


def describe(results: list[GateResult]) -> str:
    return "\n".join(f"  {result}" for result in results)
