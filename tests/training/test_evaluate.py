"""Held-out metrics and the reports written next to a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.evaluate import classification_metrics, markdown_report, read_history, write_reports

CLASSES = ("cat", "dog", "fox")


def one_hot(predicted: list[int]) -> np.ndarray:
    return np.eye(len(CLASSES))[predicted]


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    metrics = classification_metrics(labels, one_hot([0, 0, 1, 1, 2, 2]), CLASSES)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    cat, dog, fox = (metrics["per_class"][name] for name in CLASSES)
    assert (cat["precision"], cat["recall"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert (dog["precision"], dog["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert fox["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert cat["support"] == 3


def test_a_class_never_predicted_gets_zero_precision_not_nan() -> None:
    metrics = classification_metrics(np.array([0, 1, 2]), one_hot([0, 0, 0]), CLASSES)
    assert metrics["per_class"]["dog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert not np.isnan(metrics["macro_f1"])


def test_reports_hold_json_png_and_markdown(tmp_path: Path) -> None:
    metrics = classification_metrics(np.array([0, 1, 2, 2]), one_hot([0, 1, 2, 1]), CLASSES)
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.4, 0.8], "val_accuracy": [0.3, 0.6]}
    paths = write_reports(tmp_path, metrics, history=history, title="demo")
    assert json.loads(paths["confusion_json"].read_text())["matrix"] == metrics["confusion_matrix"]
    for key in ("confusion_png", "curves"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = paths["report"].read_text()
    assert "accuracy: 0.7500" in report
    assert "| fox | 1.000 | 0.500 | 0.667 | 2 |" in report


def test_history_concatenates_both_phases_from_the_csv_logs(tmp_path: Path) -> None:
    for phase, losses in (("phase1", ["0.9", "0.8"]), ("phase2", ["0.5"])):
        (tmp_path / phase).mkdir()
        rows = ["epoch,loss"] + [f"{i},{loss}" for i, loss in enumerate(losses)]
        (tmp_path / phase / "history.csv").write_text("\n".join(rows) + "\n")
    assert read_history(tmp_path) == {"loss": [0.9, 0.8, 0.5]}


def test_markdown_report_without_curves_links_only_the_confusion_matrix() -> None:
    metrics = classification_metrics(np.array([0]), one_hot([0]), CLASSES)
    report = markdown_report(metrics)
    assert "confusion_matrix.png" in report
    assert "curves.png" not in report


def test_training_curves_have_whole_epoch_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.evaluate as evaluate

    figures = []
    monkeypatch.setattr(evaluate, "_save", lambda figure, path: figures.append(figure))
    evaluate.plot_curves({"loss": [0.9, 0.7], "val_accuracy": [0.5, 0.6]}, tmp_path / "curves.png")
    [figure] = figures
    for axes in figure.axes:
        lower, upper = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if lower <= tick <= upper]
        assert ticks
        assert all(float(tick).is_integer() for tick in ticks), ticks
