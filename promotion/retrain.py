"""`tlserve retrain`: warm-start from stable, publish the candidate as canary, gate it against stable, promote or not.

Warm start restores the stable version's own variables (object-based, from its SavedModel's `variables/`)
into a classifier built with stable's recorded training config, so no side files are needed. Candidate and
stable are then scored by their exported `serving_default` on the grown dataset's test split; the path-hash
split keeps every old test image in that split as data is added, so stable never sees its holdout in training.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from promotion import gates, models_config
from promotion.gates import GateResult, GateThresholds, Metrics
from promotion.inventory import read_metadata
from tlserve import contract
from tlserve.console import EXIT_OK, CommandError

logger = logging.getLogger(__name__)

# Keys of stable's recorded config that describe the *run*, not the model; the retrain sets its own.
_RUN_KEYS = {"data", "name", "models_dir", "resume", "json", "weights", "runs_dir"}


def add_retrain_arguments(parser: argparse.ArgumentParser) -> None:
    from training.config import add_config_arguments

    parser.add_argument("data", type=Path, help="the grown dataset folder (one sub-folder per class)")
    parser.add_argument("--name", required=True, help="model to retrain (its stable version is the starting point)")
    parser.add_argument("--promote-if-better", action="store_true", help="promote to stable when every gate passes")
    parser.add_argument("--reason", default="retrain", help="recorded in the audit log")
    parser.add_argument(
        "--keep",
        type=int,
        default=0,
        help="after a promotion, delete unlabelled versions beyond the newest N (0 keeps all)",
    )
    thresholds = GateThresholds()
    parser.add_argument(
        "--accuracy-tolerance",
        type=float,
        default=thresholds.accuracy_tolerance,
        help="quality gate: candidate accuracy may trail stable by at most this",
    )
    parser.add_argument(
        "--min-class-recall",
        type=float,
        default=thresholds.min_class_recall,
        help="quality gate: floor of every class's recall",
    )
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=thresholds.min_accuracy,
        help="quality gate for a first model (no stable to compare with)",
    )
    parser.add_argument(
        "--latency-factor",
        type=float,
        default=thresholds.latency_factor,
        help="infra gate: candidate p95 may be at most this times stable's",
    )
    parser.add_argument("--allow-class-change", action="store_true", help="signature gate: accept a new class list")
    add_config_arguments(parser)


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
    except models_config.ConfigError:
        return Baseline(None, None, [], {})
    base = models_config.resolve_base_path(models_config.config_path(models_dir), model.base_path)
    # Unlabelled, the server serves the newest of the entry's specific versions, or the newest on disk.
    version = model.labels.get("stable") or max(model.versions or contract.list_versions(base), default=None)
    if version is None:
        return Baseline(None, None, [], {})
    version_dir = base / str(version)
    metadata = read_metadata(version_dir)
    return Baseline(version, version_dir, gates.read_classes(version_dir), dict(metadata.get("config", {})))


def retrain_config(args: argparse.Namespace, baseline: Baseline) -> Any:
    """Stable's recorded config ← --config file ← flags; data/name/models_dir from this command."""
    from training.config import TrainConfig, build_config, load_toml

    known = {item.name for item in fields(TrainConfig)}
    values = {key: value for key, value in baseline.config.items() if key in known and key not in _RUN_KEYS}
    if args.config is not None:
        values.update(load_toml(args.config))
    overrides = {key: value for key, value in vars(args).items() if key in known}
    overrides.update(data=str(args.data), name=args.name, models_dir=str(args.models_dir), resume=False)
    return build_config(values, overrides, source=str(args.config or "stable's config + flags"))


def warm_train(config: Any, baseline: Baseline) -> tuple[Any, Any, bool]:
    """training.train.train from stable's weights (same classes only); returns (TrainResult, scan, warm)."""
    from training.train import train
    from training.warmstart import WarmStart

    warm_start = None if baseline.version_dir is None else WarmStart(baseline.version_dir, list(baseline.classes))
    result = train(config, progress=False, warm_start=warm_start)
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


def run_retrain(args: argparse.Namespace) -> int:
    """The whole retrain; exit 0 promoted (or passed and left as canary), GateRefused (1) kept back."""
    if not args.data.is_dir():  # before TensorFlow is imported: a typo costs no start-up time
        raise CommandError(f"dataset folder not found: {args.data}")
    from promotion.retrain_flow import RetrainFlow

    flow = RetrainFlow(args)
    try:
        summary = flow.run()
    except gates.GateRefused:
        if getattr(args, "json", False) and flow.summary:
            print(json.dumps(flow.summary, indent=2, default=str))  # the refusing gates with their numbers
        raise
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2, default=str))
    return EXIT_OK


def thresholds_from_args(args: argparse.Namespace) -> GateThresholds:
    return GateThresholds(
        accuracy_tolerance=args.accuracy_tolerance,
        min_class_recall=args.min_class_recall,
        min_accuracy=args.min_accuracy,
        latency_factor=args.latency_factor,
        allow_class_change=args.allow_class_change,
    )


def describe(results: list[GateResult]) -> str:
    return "\n".join(f"  {result}" for result in results)
