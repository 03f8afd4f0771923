"""The small training runs the tests use: VGG16 (or another base) without weights, 32 px, a few images."""

from __future__ import annotations

from pathlib import Path

from training.config import RunOptions, TrainConfig, build_run

SMALL = dict(weights="none", image_size=32, batch_size=8, epochs=1, dense_units=8)


def small_run(data: Path, runs_dir: Path, *, name: str = "small", **changes: object) -> tuple[TrainConfig, RunOptions]:
    """(hyper-parameters, run options) of a seconds-long run on `data`, run directories under `runs_dir`."""
    values: dict[str, object] = {**SMALL, **changes}
    return build_run({}, {**values, "data": str(data), "name": name, "runs_dir": str(runs_dir)})
