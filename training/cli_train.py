"""`tlserve train`, `tlserve evaluate` and `tlserve sweep` (registered by tlserve.cli; TensorFlow loads in handlers)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from tlserve import contract
from tlserve.console import EXIT_OK
from training.config import ConfigError, TrainConfig, add_config_arguments, build_config, load_toml

MODELS_DIR_ENV = "TLSERVE_MODELS_DIR"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add train, evaluate and sweep."""
    train = subparsers.add_parser(
        "train", help="train a classifier on an image folder and publish the next version", description=_TRAIN_DOC
    )
    train.add_argument("data", nargs="?", default=argparse.SUPPRESS, help="dataset folder (one sub-folder per class)")
    train.add_argument("--name", default=argparse.SUPPRESS, help="model name (models/NAME/VERSION)")
    train.add_argument("--models-dir", default=argparse.SUPPRESS, help=f"model repository (env {MODELS_DIR_ENV})")
    add_config_arguments(train)
    add_promote_arguments(train)
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
    sweep.set_defaults(handler=run_sweep)


_TRAIN_DOC = (
    "Phase 1 trains a new head on the frozen base (on features computed once when --no-augment), optional "
    "phase 2 fine-tunes the top of the base; then evaluates on the held-out test split and publishes the next "
    "version atomically. Every flag is also a key of the --config TOML file; flags win."
)


def add_promote_arguments(train: argparse.ArgumentParser) -> None:
    """`--promote` and the server flags of `tlserve promote` (not config keys: they say where, not how to train)."""
    from training.cli_models import add_server

    train.add_argument(
        "--promote",
        action="store_true",
        help="make the new version stable right away (the two-step move of `tlserve promote`); without it a "
        "model's first version becomes stable and later ones are published as candidates",
    )
    add_server(train)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults ← $TLSERVE_MODELS_DIR ← --config file ← flags."""
    file_values: dict[str, Any] = {}
    if os.environ.get(MODELS_DIR_ENV):
        file_values["models_dir"] = os.environ[MODELS_DIR_ENV]
    config_path: Path | None = getattr(args, "config", None)
    if config_path is not None:
        file_values.update(load_toml(config_path))
    file_values.pop("sweep", None)
    known = set(TrainConfig.__dataclass_fields__)
    overrides = {key: value for key, value in vars(args).items() if key in known}
    return build_config(file_values, overrides, source=str(config_path or "flags"))


def _require_name_and_data(config: TrainConfig) -> None:
    if not config.data:
        raise ConfigError("missing the dataset folder (DATA argument or `data` key)")
    if not config.name:
        raise ConfigError("missing --name (or the `name` key)")
    if not contract.MODEL_NAME_PATTERN.match(config.name):
        raise ConfigError(f"--name {config.name!r}: use letters, digits, '_', '.', '-'")


def run_train(args: argparse.Namespace) -> int:
    config = train_config_from_args(args)
    _require_name_and_data(config)
    if args.promote and not args.offline:
        from training.replicas import check_servers

        check_servers(args.server, all_replicas=args.all_replicas)  # a typo fails before training, not after
    from training.publish import publish_run
    from training.train import train

    result = train(config, progress=not config.json)
    models_dir = Path(config.models_dir)
    version = publish_run(result, models_dir, config.name)
    summary = {
        "model": config.name,
        "version": version,
        "path": str(models_dir / config.name / str(version)),
        "run_dir": str(result.run_dir),
        "test_accuracy": result.metrics.get("accuracy"),
        "test_macro_f1": result.metrics.get("macro_f1"),
        "test_examples": result.metrics.get("examples", 0),
        "val_accuracy": result.val_accuracy,
        "skipped_files": result.skipped,
        "duration_s": round(result.duration_s, 1),
        **promote_published(args, models_dir, config.name, version),
    }
    print(json.dumps(summary, indent=2) if config.json else _train_text(summary))
    return EXIT_OK


def promote_published(args: argparse.Namespace, models_dir: Path, name: str, version: int) -> dict[str, Any]:
    """With --promote, move `stable` to the new version; returns the `stable` and `live` summary keys."""
    from training.modelconfig import load_model
    from training.promote import STABLE

    stable = load_model(models_dir, name).labels.get(STABLE)
    if args.promote and stable != version:
        from training.cli_models import move_options
        from training.promote import move_label

        options = move_options(args)
        try:
            move_label(models_dir, name, version, options=options, reason="tlserve train --promote")
        finally:
            if options.server is not None:
                options.server.close()
        stable = version
    return {"stable": stable, "live": stable == version}


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
        raise ConfigError(f"{path}: neither a version directory nor a model with versions")
    return path / str(versions[-1])


def run_evaluate(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    version_dir = resolve_version_dir(args.model_dir)
    if not args.data.is_dir():
        raise ConfigError(f"dataset folder not found: {args.data}")
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

    return run_sweep_command(args)
