"""`tlserve data sample|check`, `tlserve train`, `tlserve evaluate` and `tlserve sweep`: the offline pipeline's
command line (registered by tlserve.cli; the data package and TensorFlow load in the handlers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from tlserve import contract
from tlserve.console import EXIT_OK, CommandError
from training.config import (
    CHOICES,
    HELP,
    RUN_OPTIONS,
    RunOptions,
    TrainConfig,
    TrainConfigError,
    build_run,
    flag_name,
    load_toml,
)

MODELS_DIR_ENV = "TLSERVE_MODELS_DIR"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add data sample|check, train, evaluate, sweep and features ls|prune."""
    _register_data(subparsers)
    train = subparsers.add_parser(
        "train", help="train a classifier on an image folder and publish the next version", description=_TRAIN_DOC
    )
    train.add_argument("data", nargs="?", default=argparse.SUPPRESS, help="dataset folder (one sub-folder per class)")
    train.add_argument("--name", default=argparse.SUPPRESS, help="model name (models/NAME/VERSION)")
    train.add_argument("--models-dir", default=argparse.SUPPRESS, help=f"model repository (env {MODELS_DIR_ENV})")
    add_config_arguments(train)
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser("evaluate", help="evaluate an exported version on a dataset folder")
    evaluate.add_argument("model_dir", type=Path, help="a version directory (models/NAME/3) or a model (its latest)")
    evaluate.add_argument("data", type=Path, help="dataset folder with one sub-folder per class")
    evaluate.add_argument(
        "--out",
        type=Path,
        help="report directory (default: evaluation/NAME-vVERSION); if it exists, -2, -3, … is appended",
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(handler=run_evaluate)

    sweep = subparsers.add_parser("sweep", help="train a grid of configurations and compare them")
    sweep.add_argument("config", type=Path, help="TOML: train keys plus a [sweep] table of key = [values]")
    sweep.add_argument("--data", default=argparse.SUPPRESS, help="dataset folder (else the file's `data` key)")
    sweep.add_argument("--name", default=argparse.SUPPRESS, help="model name (else the file's `name` key)")
    sweep.add_argument("--models-dir", default=argparse.SUPPRESS, help=f"model repository (env {MODELS_DIR_ENV})")
    sweep.add_argument("--publish-best", action="store_true", help="publish the best run as the next version")
    sweep.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the table as JSON")
    sweep.add_argument(
        "--export-all", action="store_true", help="export every run's SavedModel (default: only the best run's)"
    )
    sweep.set_defaults(handler=run_sweep)
    _register_features(subparsers)


def _register_data(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `data sample` and `data check`."""
    data = subparsers.add_parser("data", help="generate or check an image dataset")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    _register_sample(commands)
    _register_check(commands)


def _register_sample(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("sample", help="write a generated dataset of coloured shapes (one folder per class)")
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to write (created if missing)")
    parser.add_argument("--classes", type=int, default=3, help="number of shape classes, 1-8 (default 3)")
    parser.add_argument("--per-class", type=int, default=60, help="images per class (default 60)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png", help="file format (default png)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder that is not a sample")
    parser.set_defaults(handler=run_sample)


def _register_check(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("check", help="report class counts and every unusable or odd image")
    parser.add_argument("dir", type=Path, metavar="DIR", help="dataset: one folder per class, or train/ val/ test/")
    parser.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    parser.add_argument("--quarantine", type=Path, metavar="DIR", help="move unusable files here (never deletes)")
    parser.add_argument("--val-fraction", type=float, default=0.15, metavar="F", help="validation share (default 0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.15, metavar="F", help="test share (default 0.15)")
    parser.add_argument("--max-pixels", type=int, metavar="N", help="larger images count as decompression bombs")
    parser.set_defaults(handler=run_check)


def run_sample(args: argparse.Namespace) -> int:
    from training.data.sample import SampleError, SampleSpec, write_sample

    spec = SampleSpec(args.classes, args.per_class, args.size, args.seed, args.format)
    try:
        counts = write_sample(args.out, spec, force=args.force)
    except SampleError as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes ({', '.join(counts)}) to {args.out}")
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from training.data import DatasetError, scan_dataset
    from training.data.checks import DEFAULT_MAX_PIXELS
    from training.data.quarantine import check_quarantine_dir, quarantine_files
    from training.data.report import format_report, report_dict

    try:
        if args.quarantine is not None:
            check_quarantine_dir(args.dir, args.quarantine)
        scan = scan_dataset(
            args.dir,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        )
        moved = quarantine_files(args.dir, scan.bad, args.quarantine) if args.quarantine is not None else []
    except DatasetError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        json.dump(report_dict(scan, moved), sys.stdout, indent=2)
        print()
    else:
        print(format_report(scan, moved))
    return EXIT_OK


_TRAIN_DOC = (
    "Phase 1 trains a new head on the frozen base (on base features from the persistent feature store), optional "
    "phase 2 fine-tunes the top of the base; then evaluates on the held-out test split and publishes the next "
    "version atomically. Every flag is also a key of the --config TOML file; flags win."
)


def train_config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, RunOptions]:
    """Defaults ← $TLSERVE_MODELS_DIR ← --config file ← flags."""
    file_values: dict[str, Any] = {}
    if os.environ.get(MODELS_DIR_ENV):
        file_values["models_dir"] = os.environ[MODELS_DIR_ENV]
    config_path: Path | None = getattr(args, "config", None)
    if config_path is not None:
        file_values.update(load_toml(config_path))
    file_values.pop("sweep", None)
    known = {*TrainConfig.__dataclass_fields__, *RUN_OPTIONS}
    overrides = {key: value for key, value in vars(args).items() if key in known}
    return build_run(file_values, overrides, source=str(config_path or "flags"))


def _require_name_and_data(run: RunOptions) -> None:
    if not run.data:
        raise TrainConfigError("missing the dataset folder (DATA argument or `data` key)")
    if not run.name:
        raise TrainConfigError("missing --name (or the `name` key)")
    if not contract.MODEL_NAME_PATTERN.match(run.name):
        raise TrainConfigError(f"--name {run.name!r}: use letters, digits, '_', '.', '-'")


AfterPublish = Callable[[Path, str, int], None]


def run_train(
    args: argparse.Namespace, *, before: Callable[[], None] | None = None, after_publish: AfterPublish | None = None
) -> int:
    """Train, publish (a model's first version becomes stable, later ones are candidates: training/live.py), print.

    `before` runs once the arguments are checked and `after_publish(models_dir, name, version)` once the version
    is on disk: `tlserve train --promote` (promotion/cli.py) moves `stable` there on the running servers.
    """
    config, run = train_config_from_args(args)
    _require_name_and_data(run)
    if before is not None:
        before()
    from training.live import stable_version
    from training.publish import publish_run
    from training.train import train

    result = train(config, run, progress=not run.json)
    models_dir = Path(run.models_dir)
    version = publish_run(result, models_dir, run.name)
    if after_publish is not None:
        after_publish(models_dir, run.name, version)
    stable = stable_version(models_dir, run.name)
    summary = {
        "model": run.name,
        "version": version,
        "path": str(Path(run.models_dir) / run.name / str(version)),
        "run_dir": str(result.run_dir),
        "test_accuracy": result.metrics.get("accuracy"),
        "test_macro_f1": result.metrics.get("macro_f1"),
        "test_examples": result.metrics.get("examples", 0),
        "val_accuracy": result.val_accuracy,
        "skipped_files": result.skipped,
        "features": result.features,
        "duration_s": round(result.duration_s, 1),
        "stable": stable,
        "live": stable == version,
    }
    print(json.dumps(summary, indent=2) if run.json else _train_text(summary))
    return EXIT_OK


def _train_text(summary: dict[str, Any]) -> str:
    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"published {summary['model']} version {summary['version']} -> {summary['path']}",
        _live_line(summary),
        f"test accuracy {number(summary['test_accuracy'])} on {summary['test_examples']} images, "
        f"macro F1 {number(summary['test_macro_f1'])}; validation accuracy {number(summary['val_accuracy'])}",
        f"report: {summary['run_dir']}/report.md ({summary['duration_s']} s)",
    ]
    if summary["features"]:
        features = summary["features"]
        lines.append(f"base features: {features['reused']} reused from the store, {features['computed']} computed")
    if summary["skipped_files"]:
        reasons = ", ".join(f"{count} {reason}" for reason, count in summary["skipped_files"].items())
        lines.append(f"skipped {sum(summary['skipped_files'].values())} unusable files: {reasons}")
    return "\n".join(lines)


def _live_line(summary: dict[str, Any]) -> str:
    name, version = summary["model"], summary["version"]
    if summary["live"]:
        return f"live: {name} stable -> {version} (takes unpinned traffic)"
    return (
        f"candidate: unpinned traffic stays on stable version {summary['stable']}; "
        f"make it live with: tlserve promote {name} {version}"
    )


def resolve_version_dir(path: Path) -> Path:
    """A version directory as given, or the latest version of a model directory."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = contract.list_versions(path)
    if not versions:
        raise TrainConfigError(f"{path}: neither a version directory nor a model with versions")
    return path / str(versions[-1])


def run_evaluate(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise TrainConfigError("--batch-size must be >= 1")
    version_dir = resolve_version_dir(args.model_dir)
    if not args.data.is_dir():
        raise TrainConfigError(f"dataset folder not found: {args.data}")
    from training.evaluate import evaluate_version
    from training.evaluation_guard import fresh_report_dir

    out = fresh_report_dir(args.out or Path("evaluation") / f"{version_dir.parent.name}-v{version_dir.name}")

    metrics = evaluate_version(version_dir, args.data, out, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(
            f"{version_dir}: accuracy {metrics['accuracy']:.4f} on {metrics['examples']} images, "
            f"macro F1 {metrics['macro_f1']:.4f}; report: {out}/report.md"
        )
    return EXIT_OK


def run_sweep(args: argparse.Namespace) -> int:
    from training.sweep import run_sweep_command

    overrides = {key: getattr(args, key) for key in ("data", "name", "models_dir", "json") if hasattr(args, key)}
    return run_sweep_command(args.config, overrides, publish_best=args.publish_best, export_all=args.export_all)


_CLI_ONLY = {"data", "name", "models_dir"}  # added by the subcommand itself (positional or shared flags)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of TrainConfig and RunOptions; defaults are SUPPRESSed so that only given flags override
    the file."""
    parser.add_argument("--config", type=Path, help="TOML file whose keys are these flags' names")
    for item in (*fields(TrainConfig), *fields(RunOptions)):
        if item.name in _CLI_ONLY:
            continue
        help_text = f"{HELP.get(item.name, item.name.replace('_', ' '))} (default: {item.default})"
        if item.type == "bool":
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag_name(item.name), action=action, default=argparse.SUPPRESS, help=help_text)
        else:
            choices = CHOICES.get(item.name)
            parser.add_argument(
                flag_name(item.name),
                type=_parser_for(item.type),
                default=argparse.SUPPRESS,
                metavar="{" + ",".join(choices) + "}" if choices else None,
                help=help_text,
            )


def _parser_for(type_name: Any) -> Any:
    return {"int": int, "float": float, "str": str}[str(type_name)]


# ---- tlserve features: the persistent base-feature store (plain .npy files, no TensorFlow) ----


def _register_features(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `features ls` (what the persistent feature store holds) and `features prune` (by age or size)."""
    features = subparsers.add_parser("features", help="inspect or prune the persistent base-feature store")
    commands = features.add_subparsers(dest="features_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("ls", help="entries and size on disk per base and image size")
    _add_store_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.set_defaults(handler=run_features_ls)
    pruning = commands.add_parser("prune", help="delete entries by age and/or total size (oldest first)")
    _add_store_arguments(pruning)
    pruning.add_argument("--older-than-days", type=float, help="delete entries written more than this long ago")
    pruning.add_argument("--max-mb", type=float, help="then delete the oldest until at most this many MB remain")
    pruning.set_defaults(handler=run_features_prune)


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feature-store", default="", help="store folder (env TLSERVE_FEATURE_STORE)")
    parser.add_argument("--runs-dir", default="runs", help="default store: RUNS_DIR/.features")


def run_features_ls(args: argparse.Namespace) -> int:
    from training.feature_store import store_path, summarize

    root = store_path(args.feature_store, args.runs_dir)
    rows = summarize(root)
    if args.json:
        print(json.dumps({"store": str(root), "partitions": rows}, indent=2))
        return EXIT_OK
    print(f"{root}: {sum(r['entries'] for r in rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB")
    for row in rows:
        print(f"  {row['partition']}: {row['entries']} entries, {row['bytes'] / 1e6:.1f} MB")
    return EXIT_OK


def run_features_prune(args: argparse.Namespace) -> int:
    from training.feature_store import prune, store_path

    root = store_path(args.feature_store, args.runs_dir)
    older_than_s = None if args.older_than_days is None else args.older_than_days * 86400
    max_bytes = None if args.max_mb is None else int(args.max_mb * 1e6)
    removed, freed = prune(root, older_than_s=older_than_s, max_bytes=max_bytes)
    print(f"{root}: removed {removed} entries, freed {freed / 1e6:.1f} MB")
    return EXIT_OK
