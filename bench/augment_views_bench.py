"""`--augment` phase 1 (issue 10): K stored augmented views (cold store, warm store) vs end to end, and test
accuracy vs K. One run, paired, load average beside each number.

Two bases: VGG16 `weights=None` (the shipped default base; random weights, so its accuracy only shows that both
paths agree at chance) and a MobileNetV2 base pretrained here for a few epochs on a *separate* generated sample
(other seed), saved as a weights file and loaded with `--weights PATH`: frozen features that actually separate
the shapes, so the accuracy comparison means something. No network needed.

    .venv/bin/python bench/augment_views_bench.py [--per-class 300 --vgg-per-class 100 --seeds 0 1 2] [--out x.json]
    .venv/bin/python bench/augment_views_bench.py --vgg-only --vgg-seeds 0 1 [--out x.json]   # timing only
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

CLASSES = 3


def load() -> float:
    return os.getloadavg()[0]


def pretrain_base(work: Path, image_size: int, per_class: int, epochs: int) -> Path:
    """MobileNetV2 (+ GAP + softmax) trained end to end on another generated sample; returns the base's weights."""
    import keras

    from training.config import TrainConfig
    from training.data import scan_dataset
    from training.data.sample import SampleSpec, write_sample
    from training.features import pixel_dataset
    from training.model import Preprocess

    data = work / "pretrain-data"
    write_sample(data, SampleSpec(classes=CLASSES, per_class=per_class, size=image_size, seed=1000))
    records = scan_dataset(data, val_fraction=0.0, test_fraction=0.0, progress=False).records
    config = TrainConfig(image_size=image_size, batch_size=32, seed=0)
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    pixels = keras.Input((image_size, image_size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(Preprocess("mobilenet_v2")(pixels)))
    model = keras.Model(pixels, keras.layers.Dense(CLASSES, activation="softmax")(x))
    for layer in base.layers:  # a few hundred steps: BatchNorm's default 0.999 would leave its statistics unset
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(pixel_dataset(records, config, CLASSES, shuffle=True), epochs=epochs, verbose=0)
    inference = model.evaluate(pixel_dataset(records, config, CLASSES, shuffle=False), verbose=0, return_dict=True)
    path = work / "mobilenet_v2-shapes.weights.h5"
    base.save_weights(path)
    print(f"pretrained base: accuracy {inference['accuracy']:.3f} on its own data (inference mode)", flush=True)
    return path


def timed_run(values: dict[str, Any]) -> dict[str, Any]:
    """One `train` in-process with phase 1 timed (whichever path it takes); seconds, counts, test accuracy."""
    import training.phases as phases
    from training.config import build_run
    from training.train import train

    seconds: list[float] = []
    originals = {name: getattr(phases, name) for name in ("fit_head_on_features", "fit_head_end_to_end")}

    def timing(original: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = original(*args, **kwargs)
            seconds.append(time.perf_counter() - started)
            return result

        return timed

    for name, original in originals.items():
        setattr(phases, name, timing(original))
    try:
        load_before = load()
        result = train(*build_run({}, values), progress=False)
    finally:
        for name, original in originals.items():
            setattr(phases, name, original)
    return {
        "phase1_s": round(seconds[0], 2),
        "features": result.features,
        "test_accuracy": result.metrics.get("accuracy"),
        "load_before": round(load_before, 2),
        "load_after": round(load(), 2),
    }


def compare(data: Path, work: Path, label: str, seeds: list[int], **settings: Any) -> dict[str, Any]:
    """Per seed: end to end, K = 4 on a cold store, K = 4 again (warm); medians of the phase-1 ratios."""
    rows = []
    for seed in seeds:
        common = dict(data=str(data), name=label, augment=True, epochs=5, seed=seed, runs_dir=str(work / "runs"))
        common.update(settings)
        store = work / f"store-{label}-{seed}"
        row: dict[str, Any] = {"seed": seed}
        row["end_to_end"] = timed_run({**common, "feature_cache": False})
        row["cold"] = timed_run({**common, "augment_views": 4, "feature_store": str(store)})
        row["warm"] = timed_run({**common, "augment_views": 4, "feature_store": str(store)})
        for kind in ("cold", "warm"):
            row[f"{kind}_speedup"] = round(row["end_to_end"]["phase1_s"] / row[kind]["phase1_s"], 2)
        print(json.dumps({label: row}), flush=True)
        rows.append(row)
    summary = {
        f"median_{kind}_speedup": statistics.median(r[f"{kind}_speedup"] for r in rows) for kind in ("cold", "warm")
    }
    for kind in ("end_to_end", "cold"):
        summary[f"mean_accuracy_{kind}"] = statistics.mean(r[kind]["test_accuracy"] for r in rows)
    return {"runs": rows, **summary}


def accuracy_by_views(data: Path, work: Path, seeds: list[int], views: list[int], **settings: Any) -> dict[str, Any]:
    """Test accuracy per K (mean over seeds); one store per seed, so K = 8 reuses the views K = 4 computed."""
    from training.config import build_run
    from training.train import train

    table: dict[str, Any] = {}
    for count in views:
        accuracies = []
        for seed in seeds:
            config, run = build_run({}, dict(
                data=str(data), name="k", augment=True, epochs=5, seed=seed, augment_views=count,
                runs_dir=str(work / "runs"), feature_store=str(work / f"store-k-{seed}"), **settings,
            ))  # fmt: skip
            accuracies.append(train(config, run, progress=False).metrics["accuracy"])
        table[str(count)] = {"accuracies": accuracies, "mean": statistics.mean(accuracies), "load": round(load(), 2)}
        print(json.dumps({"K": count, **table[str(count)]}), flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    from training.data.sample import SampleSpec, write_sample

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=300, help="images per class (accuracy runs)")
    parser.add_argument("--vgg-per-class", type=int, default=100, help="images per class (VGG16 timing runs)")
    parser.add_argument("--vgg-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--skip-vgg", action="store_true", help="only the pretrained-base comparison and K table")
    parser.add_argument("--vgg-only", action="store_true", help="only the VGG16 timing runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"per_class": args.per_class, "vgg_per_class": args.vgg_per_class}
    results.update(classes=CLASSES, image_size=args.image_size)
    common = {"image_size": args.image_size, "batch_size": 32, "dense_units": 64}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        small, data = work / "vgg-data", work / "data"
        write_sample(small, SampleSpec(classes=CLASSES, per_class=args.vgg_per_class, size=args.image_size, seed=0))
        write_sample(data, SampleSpec(classes=CLASSES, per_class=args.per_class, size=args.image_size, seed=0))
        if not args.skip_vgg:
            results["vgg16_none"] = compare(small, work, "vgg", args.vgg_seeds, weights="none", **common)
        if not args.vgg_only:
            weights = pretrain_base(work, args.image_size, args.per_class, args.pretrain_epochs)
            pretrained = {"base": "mobilenet_v2", "weights": str(weights), **common}
            results["mobilenet_v2_pretrained"] = compare(data, work, "mnv2", args.seeds, **pretrained)
            results["accuracy_by_views"] = accuracy_by_views(data, work, args.seeds, args.views, **pretrained)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
