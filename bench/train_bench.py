"""Training benchmark (issue 2): the original recipe vs tlserve's phase 1, on one generated dataset, in one run.

Original recipe: `ImageDataGenerator(rescale=1/255).flow_from_directory` + `fit` through the frozen VGG16 with a
Flatten → Dense(1024, relu) → Dense(C, softmax) head, 5 epochs. tlserve phase 1: the same head and optimizer,
trained by `training.phases.fit_head_on_features` (tf.data decode → frozen-base features once → head epochs).
Both start from VGG16 weights=None (no download here; the cost is the same). Each repeat runs tlserve and then the
recipe back to back; every ratio is PAIRED within one repeat (never one side's best repeat against the other's)
and the summary is the median of those ratios. Prints Markdown tables for docs/BENCHMARKS.md ("Training") with
the 1-minute load average around each repeat, and writes the raw numbers as JSON. Nothing is asserted here.

    .venv/bin/python bench/train_bench.py [--repeats 3 --images-per-class 200 --image-size 64 --epochs 5] [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
TARGETS = {"head_epoch_speedup": 20.0, "phase_speedup": 4.0}


def make_dataset_folder(root: Path, per_class: int, classes: int) -> Path:
    """train/ (measured) plus small val/ and test/ folders, so both sides train on exactly the same files."""
    from training.data.sample import SampleSpec, write_sample

    write_sample(root / "train", SampleSpec(classes=classes, per_class=per_class, size=128, seed=0))
    for index, split in enumerate(("val", "test"), start=1):
        write_sample(root / split, SampleSpec(classes=classes, per_class=4, size=128, seed=index))
    return root


class EpochTimer:
    """Wall time of every epoch (a Keras callback built lazily so this module imports without TensorFlow)."""

    def __new__(cls) -> Any:
        import keras

        class _Timer(keras.callbacks.Callback):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - self._start)

        return _Timer()


def original_recipe(train_dir: Path, image_size: int, batch_size: int, epochs: int) -> dict[str, Any]:
    """The seed's code, as written for tf.keras (Keras 3 keeps ImageDataGenerator only there)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    generator = tf.keras.preprocessing.image.ImageDataGenerator(rescale=1.0 / 255)
    flow = generator.flow_from_directory(
        str(train_dir), target_size=(image_size, image_size), batch_size=batch_size, class_mode="categorical"
    )
    pipeline_rate = _generator_rate(flow)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    base.trainable = False
    model = keras.Sequential(
        [
            base,
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(flow.num_classes, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    started = time.perf_counter()
    model.fit(flow, epochs=epochs, callbacks=[timer], verbose=0)
    return {"phase_s": time.perf_counter() - started, "epoch_s": timer.seconds, "pipeline_images_per_s": pipeline_rate}


def _generator_rate(flow: Any) -> float:
    """Images/s of one pass of the generator alone (PIL decode + resize + rescale in the Python loop)."""
    flow[0]  # warm-up, like the tf.data side
    started = time.perf_counter()
    seen = 0
    for index in range(len(flow)):
        seen += len(flow[index][0])
    flow.on_epoch_end()
    return seen / (time.perf_counter() - started)


def tlserve_phase1(root: Path, image_size: int, batch_size: int, epochs: int, work: Path) -> dict[str, Any]:
    """The real phase-1 code path, with an epoch timer added to its callbacks."""
    import keras

    import training.phases as phases
    from training.config import RunOptions, TrainConfig
    from training.data import make_dataset, scan_dataset
    from training.model import build_classifier

    scan = scan_dataset(root, progress=False)
    train_records = scan.split("train")
    config = TrainConfig(weights="none", image_size=image_size, batch_size=batch_size, epochs=epochs)
    work.mkdir(parents=True, exist_ok=True)
    run = RunOptions(feature_store=tempfile.mkdtemp(prefix="features-", dir=work))  # cold: measures the feature pass
    pipeline_rate = _dataset_rate(
        make_dataset(train_records, image_size, batch_size, num_classes=3, shuffle=False, seed=0, cache=False),
        len(train_records),
    )
    keras.utils.set_random_seed(0)
    classifier = build_classifier(config, len(scan.classes))
    timer = EpochTimer()
    original_callbacks = phases.phase_callbacks  # type: ignore[attr-defined]
    phases.phase_callbacks = lambda *args, **kwargs: [*original_callbacks(*args, **kwargs), timer]  # type: ignore[attr-defined]
    started = time.perf_counter()
    source = phases.open_feature_source(classifier, config, run)
    splits = {"train": train_records, "val": [], "test": []}
    phases.fit_head_on_features(classifier, config, splits, work / "phase1", None, progress=False, source=source)
    phase_s = time.perf_counter() - started
    phases.phase_callbacks = original_callbacks  # type: ignore[attr-defined]
    return {
        "phase_s": phase_s,
        "epoch_s": timer.seconds,
        "pipeline_images_per_s": pipeline_rate,
        "feature_pass_s": phase_s - sum(timer.seconds),
        "images": len(train_records),
    }


def _dataset_rate(dataset: Any, count: int) -> float:
    """Images/s of one uncached pass of the tf.data pipeline (parallel decode + resize), after a warm-up pass."""
    for _ in dataset:  # the first pass also builds the pipeline's graph
        pass
    started = time.perf_counter()
    for _ in dataset:
        pass
    return count / (time.perf_counter() - started)


def steady(epoch_s: list[float]) -> float:
    """Seconds per epoch after the first (which also traces the graph)."""
    return statistics.mean(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]


def paired(original: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    """The three ratios of ONE repeat: both sides ran back to back, so they saw about the same load."""
    return {
        "head_epoch": steady(original["epoch_s"]) / steady(ours["epoch_s"]),
        "phase": original["phase_s"] / ours["phase_s"],
        "pipeline": ours["pipeline_images_per_s"] / original["pipeline_images_per_s"],
    }


def median_of(runs: list[dict[str, Any]], pick: Any) -> float:
    return float(statistics.median(pick(run) for run in runs))


def report(original_runs: list[dict[str, Any]], ours_runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Per-repeat paired ratios and their median; never one side's best repeat against the other's."""
    ratios = [paired(original, ours) for original, ours in zip(original_runs, ours_runs, strict=True)]
    median = {key: median_of(ratios, lambda r, k=key: r[k]) for key in ("head_epoch", "phase", "pipeline")}
    measures = [
        ("s per head epoch (epochs 2..N, mean)", lambda run: steady(run["epoch_s"]), "head_epoch"),
        (f"s for the {args.epochs}-epoch phase", lambda run: run["phase_s"], "phase"),
        ("input pipeline, images/s (one uncached pass)", lambda run: run["pipeline_images_per_s"], "pipeline"),
    ]
    ours = ours_runs[0]
    lines = [
        f"{ours['images']} training images, 3 classes, {args.image_size} px, batch {args.batch_size}, VGG16 "
        f"(weights=None), Adam 1e-3, head Flatten → Dense(1024) → Dense(3); {len(ratios)} repeats, each running "
        "tlserve then the recipe back to back. Medians over the repeats; ratio = median of the per-repeat ratios.",
        "",
        "| measure | original recipe (median) | tlserve phase 1 (median) | paired ratio (median) |",
        "|---|---|---|---|",
    ]
    for name, pick, key in measures:
        a, b = median_of(original_runs, pick), median_of(ours_runs, pick)
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {_ratio(median[key])} |")
    lines += [
        "",
        "| repeat | recipe phase s (epochs) | tlserve phase s (feature pass; epochs) | head-epoch ratio | phase ratio "
        "| pipeline ratio | load avg (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, (original, ours, ratio) in enumerate(zip(original_runs, ours_runs, ratios, strict=True), start=1):
        lines.append(
            f"| {index} | {original['phase_s']:.1f} ({_epochs(original['epoch_s'])}) | {ours['phase_s']:.1f} "
            f"({ours['feature_pass_s']:.1f}; {_epochs(ours['epoch_s'])}) | {_ratio(ratio['head_epoch'])} "
            f"| {_ratio(ratio['phase'])} | {_ratio(ratio['pipeline'])} | {ours['load_before']:.2f} → "
            f"{original['load_after']:.2f} |"
        )
    lines.append("")
    for key, label in (("head_epoch_speedup", "head_epoch"), ("phase_speedup", "phase")):
        met = sum(ratio[label] >= TARGETS[key] for ratio in ratios)
        verdict = "met" if median[label] >= TARGETS[key] else "MISSED"
        lines.append(
            f"Target ≥ {TARGETS[key]:.0f}× ({key}): median {_ratio(median[label])} — {verdict}; "
            f"reached in {met} of {len(ratios)} repeats."
        )
    return "\n".join(lines)


def _ratio(value: float) -> str:
    """Two decimals near the targets (3.98× is not 4×), one above 10×."""
    return f"{value:.1f}×" if value >= 10 else f"{value:.2f}×"


def _epochs(seconds: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in seconds)


def load_average() -> float:
    """The 1-minute load average (the machine is shared; it explains the spread between repeats)."""
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images-per-class", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="run both sides back to back this often")
    parser.add_argument("--out", type=Path, help="write the raw numbers here as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = make_dataset_folder(Path(tmp) / "data", args.images_per_class, 3)
        ours_runs, original_runs = [], []
        for repeat in range(args.repeats):  # back to back, so load from other processes hits both sides alike
            load_before = load_average()
            ours = tlserve_phase1(root, args.image_size, args.batch_size, args.epochs, Path(tmp) / str(repeat))
            original = original_recipe(root / "train", args.image_size, args.batch_size, args.epochs)
            ours_runs.append({**ours, "load_before": load_before})
            original_runs.append({**original, "load_after": load_average()})
    print(report(original_runs, ours_runs, args))
    if args.out:
        args.out.write_text(
            json.dumps({"original": original_runs, "tlserve": ours_runs, "args": vars(args)}, default=str, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
