"""From a finished training run to a model version: export with real warmup requests, then publish atomically."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from training.export import ExportSpec, export_saved_model
from training.repository import new_staging_dir, publish_version
from training.staging import discard_staging
from training.train import TrainResult

logger = logging.getLogger(__name__)

WARMUP_IMAGES = 8


def export_run(result: TrainResult, out_dir: Path) -> Path:
    """Write the run's model as a SavedModel version into `out_dir` (an empty directory)."""
    spec = ExportSpec(
        classes=result.classes,
        image_size=result.config.image_size,
        base=result.config.base,
        metrics=summary_metrics(result),
        data_fingerprint=result.data_fingerprint,
        config=result.config.to_dict(),
        extra={"run_dir": str(result.run_dir), "data_dir": str(Path(result.run.data).resolve())},
    )
    return export_saved_model(result.classifier.model, spec, out_dir, warmup_images=warmup_images(result))


def publish_run(result: TrainResult, models_dir: Path, name: str) -> int:
    """Export into a staging directory beside the versions and rename it into place; returns the version."""
    model_dir = models_dir / name
    staged = new_staging_dir(model_dir)
    try:
        export_run(result, staged)
        return publish_candidate(staged, models_dir, name)
    finally:
        if staged.exists():  # export failed: the staging dir was never visible as a version
            discard_staging(staged)


def publish_exported(exported: Path, models_dir: Path, name: str) -> int:
    """Publish an already exported SavedModel directory (a sweep's winner) as the next version."""
    model_dir = models_dir / name
    staged = new_staging_dir(model_dir)
    try:
        shutil.copytree(exported, staged, dirs_exist_ok=True)
        return publish_candidate(staged, models_dir, name)
    finally:
        if staged.exists():
            discard_staging(staged)


def publish_candidate(staged: Path, models_dir: Path, name: str) -> int:
    """Publish a finished export as the next version; only a model's first version goes live (see training.live)."""
    from training.live import label_if_first, pin_live_version

    if models_dir.is_dir():
        pin_live_version(models_dir, name)
    version = publish_version(staged, models_dir / name)
    label_if_first(models_dir, name, version)
    return version


def warmup_images(result: TrainResult) -> list[bytes]:
    """Real test images that TensorFlow decodes natively (TF Serving replays them before the first request)."""
    images: list[bytes] = []
    for path in result.test_paths:
        if len(images) == WARMUP_IMAGES:
            break
        if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".gif"}:
            images.append(path.read_bytes())
    return images


def summary_metrics(result: TrainResult) -> dict[str, Any]:
    """The headline numbers stored in metadata.json (the full report stays in the run directory)."""
    metrics = result.metrics
    return {
        "test_accuracy": metrics.get("accuracy"),
        "test_macro_f1": metrics.get("macro_f1"),
        "test_examples": metrics.get("examples", 0),
        "val_accuracy": result.val_accuracy,
        "per_class": metrics.get("per_class", {}),
        "skipped_files": result.skipped,
        "duration_s": round(result.duration_s, 1),
    }
