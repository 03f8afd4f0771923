"""`tlserve sweep`: train every combination of the values in a config file's `[sweep]` table and compare them.

Each run is a normal training run (own run directory and reports); the best run is exported as an unpublished
SavedModel in its run directory (`--export-all`: every run). The comparison is sorted by validation accuracy,
never by test accuracy, so the test split stays a holdout.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tlserve.console import EXIT_OK
from training.config import RUN_OPTIONS, RunOptions, TrainConfig, TrainConfigError, build_run, load_toml, normalize_keys

logger = logging.getLogger(__name__)

COLUMNS = ("rank", "run", "val_accuracy", "test_accuracy", "test_macro_f1", "duration_s")


def grid(sweep_table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the table's values (a scalar counts as a one-value list), in file order."""
    table = normalize_keys(sweep_table, source="[sweep]")
    run_keys = sorted(key for key in table if key in RUN_OPTIONS)
    if run_keys:
        raise TrainConfigError(f"[sweep]: {', '.join(run_keys)} cannot vary (run options, not hyper-parameters)")
    keys = list(table)
    values = [value if isinstance(value, list) else [value] for value in table.values()]
    if any(not options for options in values):
        raise TrainConfigError("[sweep]: every key needs at least one value")
    return [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*values)]


def sweep_configs(
    file_values: Mapping[str, Any], overrides: Mapping[str, Any], source: str
) -> tuple[list[TrainConfig], RunOptions]:
    """One validated config per grid point (all are checked before the first run starts), and the run options."""
    base_values = {key: value for key, value in file_values.items() if key != "sweep"}
    table = file_values.get("sweep")
    if not isinstance(table, dict) or not table:
        raise TrainConfigError(f"{source}: needs a non-empty [sweep] table of key = [values]")
    built = [build_run({**base_values, **point}, overrides, source=source) for point in grid(table)]
    run = built[0][1]
    if run.resume:
        raise TrainConfigError("--resume is not supported in a sweep")
    return [config for config, _ in built], run


def run_sweep_command(
    config_file: Path, overrides: Mapping[str, Any], *, publish_best: bool = False, export_all: bool = False
) -> int:
    """Run the grid of `config_file` (flags in `overrides`), print and write the comparison, maybe publish the best."""
    from training.feature_store import store_path

    file_values: dict[str, Any] = {}
    if os.environ.get("TLSERVE_MODELS_DIR"):
        file_values["models_dir"] = os.environ["TLSERVE_MODELS_DIR"]
    file_values.update(load_toml(config_file))
    configs, first = sweep_configs(file_values, overrides, str(config_file))
    if not first.data or not first.name:
        raise TrainConfigError("a sweep needs a dataset (`data` key or --data) and a model name (`name` key or --name)")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    sweep_dir = Path(first.runs_dir) / first.name / f"sweep-{stamp}"
    # Every run shares the runs dir's feature store (not one under the sweep dir): later runs reuse it too.
    store = str(store_path(first.feature_store, first.runs_dir))
    run = dataclasses.replace(first, runs_dir=str(sweep_dir), feature_store=store)
    rows = run_grid(configs, run, progress=not first.json, export_all=export_all)
    write_tables(rows, sweep_dir)
    published = None
    if publish_best and rows:
        from training.publish import publish_exported

        published = publish_exported(Path(rows[0]["export_dir"]), Path(first.models_dir), first.name)
    if first.json:
        print(json.dumps({"runs": rows, "sweep_dir": str(sweep_dir), "published_version": published}, indent=2))
    else:
        print(markdown_table(rows))
        print(f"sweep results: {sweep_dir}/sweep.md, sweep.csv, sweep.json")
        if published is not None:
            print(f"published {first.name} version {published} (run {rows[0]['run']})")
    return EXIT_OK


def run_grid(
    configs: Sequence[TrainConfig], run: RunOptions, *, progress: bool, export_all: bool = False
) -> list[dict[str, Any]]:
    """Train every config (run directories under `run.runs_dir`) and export the best run (every run with
    `export_all`); rows ranked as `rank_rows` says.

    Runs that keep the base frozen share one built base per base/weights/size/seed/precision, and every run
    shares the feature store: the base is built once and runs once per image for the whole sweep.
    """
    import keras

    from training.publish import export_run
    from training.train import train

    varying = {key for key in TrainConfig.__dataclass_fields__ if len({str(getattr(c, key)) for c in configs}) > 1}
    bases: dict[tuple[Any, ...], Any] = {}
    rows: list[dict[str, Any]] = []
    best: tuple[tuple[Any, ...], dict[str, Any], Any] | None = None
    with _no_cross_run_retracing_warnings():
        for index, config in enumerate(configs):
            logger.info("sweep run %d/%d", index + 1, len(configs))
            key = shared_base_key(config)
            result = train(config, run, progress=progress, base=bases.get(key) if key else None)
            if key is not None:
                bases.setdefault(key, result.classifier.base)
            row = _row(index, config, result, varying)
            rows.append(row)
            if export_all:
                row["export_dir"] = str(export_run(result, _export_dir(result)))
            elif best is None or _rank_key(row) < best[0]:
                best = (_rank_key(row), row, result)  # the only finished model kept: the one that may be exported
            keras.backend.clear_session()  # free the finished run's graph before the next one
        if best is not None:
            _, row, result = best
            row["export_dir"] = str(export_run(result, _export_dir(result)))
    return rank_rows(rows)


def shared_base_key(config: TrainConfig) -> tuple[Any, ...] | None:
    """What decides a built base's weights; None when the run fine-tunes it (then it cannot be shared)."""
    if config.fine_tune_epochs > 0:
        return None
    return (config.base, config.weights, config.image_size, config.seed, config.mixed_precision)


def _rank_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The order of `rank_rows`: best validation accuracy first, then grid order; no validation last."""
    return (row["val_accuracy"] is None, -(row["val_accuracy"] or 0.0), int(row["run"][3:]))


def _export_dir(result: Any) -> Path:
    export_dir = Path(result.run_dir) / "export"
    export_dir.mkdir()
    return export_dir


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best validation accuracy first; equal accuracies share a rank and keep grid order (never wall-clock time,
    which would pick a tie's winner by machine load). --publish-best takes the first row."""
    rows = sorted(rows, key=_rank_key)
    for position, row in enumerate(rows, start=1):
        previous = rows[position - 2] if position > 1 else None
        tied = previous is not None and previous["val_accuracy"] == row["val_accuracy"]
        row["rank"] = previous["rank"] if previous is not None and tied else position
    return rows


class _CrossRunRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning, which is a false alarm between sweep runs.

    TensorFlow counts traces per Python code object, and every Keras model's step functions share theirs, so
    each fresh model of a new run (traced at most twice per function: Keras uses reduce_retracing) adds to one
    counter and trips the warning from the second or third run, although building new models is what a sweep is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _no_cross_run_retracing_warnings() -> Iterator[None]:
    tf_logger = logging.getLogger("tensorflow")
    retracing = _CrossRunRetracing()
    tf_logger.addFilter(retracing)
    try:
        yield
    finally:
        tf_logger.removeFilter(retracing)


def _row(index: int, config: TrainConfig, result: Any, varying: set[str]) -> dict[str, Any]:
    """One line of the comparison; `config` holds only the keys the grid varies; `export_dir` None unless exported."""
    return {
        "run": f"run{index + 1:02d}",
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.metrics.get("accuracy"),
        "test_macro_f1": result.metrics.get("macro_f1"),
        "duration_s": round(result.duration_s, 1),
        "config": {key: value for key, value in config.to_dict().items() if key in varying},
        "features": dict(getattr(result, "features", {})),  # phase 1: base features reused / computed
        "run_dir": str(result.run_dir),
        "export_dir": None,
    }


def write_tables(rows: Sequence[Mapping[str, Any]], sweep_dir: Path) -> None:
    """sweep.json (everything), sweep.csv (one column per config key) and sweep.md."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    config_keys = sorted({key for row in rows for key in row["config"]})
    with open(sweep_dir / "sweep.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, *config_keys, "run_dir"])
        for row in rows:
            config = row["config"]
            writer.writerow([*(row[c] for c in COLUMNS), *(config.get(k, "") for k in config_keys), row["run_dir"]])
    (sweep_dir / "sweep.md").write_text(markdown_table(rows) + "\n", encoding="utf-8")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| rank | run | val acc | test acc | test macro F1 | s | config |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        config = ", ".join(f"{key}={value}" for key, value in sorted(row["config"].items()))
        numbers = (_number(row["val_accuracy"]), _number(row["test_accuracy"]), _number(row["test_macro_f1"]))
        lines.append(f"| {row['rank']} | {row['run']} | {' | '.join(numbers)} | {row['duration_s']} | {config} |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"
