"""Held-out evaluation: metrics (accuracy, per-class P/R/F1, confusion matrix) and the reports written next to a run.

Pure NumPy + matplotlib (Agg), so it reads the same whether the probabilities came from the in-process model
(after training) or from an exported version's `serving_default` (`tlserve evaluate`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro averages and per-class precision/recall/F1/support (0 where undefined)."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    matrix = confusion_matrix(np.asarray(labels), predicted, len(classes))
    true_positives = np.diag(matrix).astype(np.float64)
    precision = _safe_divide(true_positives, matrix.sum(axis=0))
    recall = _safe_divide(true_positives, matrix.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(matrix[i].sum()),
        }
        for i, name in enumerate(classes)
    }
    total = int(matrix.sum())
    return {
        "accuracy": float(true_positives.sum() / total) if total else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "examples": total,
        "classes": list(classes),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    denominator = np.asarray(denominator, dtype=np.float64)
    result: np.ndarray = np.divide(numerator, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return result


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """Per-epoch metrics of phase 1 then phase 2, from the CSV logs (they survive --resume)."""
    history: dict[str, list[float]] = {}
    for phase in ("phase1", "phase2"):
        path = run_dir / phase / "history.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key != "epoch" and value not in ("", None):
                        history.setdefault(key, []).append(float(value))
    return history


def write_reports(
    out_dir: Path, metrics: Mapping[str, Any], *, history: Mapping[str, list[float]] | None = None, title: str = ""
) -> dict[str, Path]:
    """metrics.json, confusion_matrix.json/.png, curves.png (if a history is given) and report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "confusion_json": out_dir / "confusion_matrix.json",
        "confusion_png": out_dir / "confusion_matrix.png",
        "report": out_dir / "report.md",
    }
    paths["metrics"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    confusion = {"classes": metrics["classes"], "matrix": metrics["confusion_matrix"]}
    paths["confusion_json"].write_text(json.dumps(confusion, indent=2) + "\n", encoding="utf-8")
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics["classes"], paths["confusion_png"])
    if history:
        paths["curves"] = out_dir / "curves.png"
        plot_curves(history, paths["curves"])
    paths["report"].write_text(markdown_report(metrics, title=title, has_curves=bool(history)), encoding="utf-8")
    return paths


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path) -> None:
    figure, axes = _figure(max(4.0, 0.6 * len(classes) + 2))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), labels=list(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center")
    _save(figure, path)


def plot_curves(history: Mapping[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, both phases concatenated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for key, values in history.items():
        if key.endswith("loss"):
            loss_axes.plot(range(1, len(values) + 1), values, label=key)
        elif key.endswith("accuracy"):
            accuracy_axes.plot(range(1, len(values) + 1), values, label=key)
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.2, 1.4 … ticks
        axes.set_title(name)
        axes.legend()
    _save(figure, path)


def _figure(size: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # headless: never open a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(size, size))
    return figure, axes


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown_report(metrics: Mapping[str, Any], *, title: str = "", has_curves: bool = False) -> str:
    """A short human-readable summary: headline numbers, a per-class table, links to the figures."""
    lines = [f"# Evaluation {title}".rstrip(), ""]
    lines.append(f"- examples: {metrics['examples']}")
    lines.append(f"- accuracy: {metrics['accuracy']:.4f}")
    lines.append(f"- macro F1: {metrics['macro_f1']:.4f}")
    if metrics.get("val_accuracy") is not None:
        lines.append(f"- validation accuracy: {metrics['val_accuracy']:.4f}")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)"]
    if has_curves:
        lines.append("![training curves](curves.png)")
    return "\n".join(lines) + "\n"


def evaluate_version(version_dir: Path, data_dir: Path, out_dir: Path, *, batch_size: int = 32) -> dict[str, Any]:
    """Evaluate an exported version on every usable image of a dataset folder, through its `serving_default`.

    The dataset's class folders must be a subset of the version's labels; the reports go into `out_dir`.
    """
    import tensorflow as tf

    from tlserve import contract
    from training.config import TrainConfigError
    from training.data import DatasetError, scan_dataset
    from training.data.checks import to_png_bytes
    from training.evaluation_guard import overlap_warning, trained_on

    labels_path = version_dir / contract.LABELS_FILE
    if not labels_path.is_file():
        raise TrainConfigError(f"{version_dir}: not an exported version (no {contract.LABELS_FILE})")
    classes = labels_path.read_text(encoding="utf-8").splitlines()
    trained = trained_on(version_dir, data_dir)
    fractions = {key: trained[key] for key in ("val_fraction", "test_fraction") if key in trained} if trained else {}
    try:
        scan = scan_dataset(data_dir, progress=False, **fractions)  # the split the version was trained with
    except DatasetError as exc:
        raise TrainConfigError(str(exc)) from None
    unknown = sorted(set(scan.classes) - set(classes))
    if unknown:
        raise TrainConfigError(f"{data_dir}: classes the model does not know: {', '.join(unknown)}")
    if not scan.records:
        raise TrainConfigError(f"{data_dir}: no usable images")
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_BYTES]
    labels = np.array([classes.index(scan.classes[r.label]) for r in scan.records])
    batches = []
    for start in range(0, len(scan.records), batch_size):
        chunk = scan.records[start : start + batch_size]
        encoded = [to_png_bytes(r.path.read_bytes()) if r.needs_conversion else r.path.read_bytes() for r in chunk]
        outputs = signature(**{contract.INPUT_BYTES: tf.constant(encoded)})
        batches.append(outputs[contract.OUTPUT_PROBABILITIES].numpy())
    metrics = classification_metrics(labels, np.concatenate(batches), classes)
    metrics["skipped"] = scan.bad_reasons()
    # Same folder as training: its train/val images were fitted or used for model selection.
    metrics["seen_in_training"] = sum(r.split != "test" for r in scan.records) if trained else 0
    if metrics["seen_in_training"]:
        logger.warning("%s", overlap_warning(version_dir, data_dir, metrics["seen_in_training"], len(scan.records)))
    write_reports(out_dir, metrics, title=f"of {version_dir} on {data_dir}")
    return metrics
