"""`tlserve models list|show|gc`, `promote`, `rollback`, `retrain`, and `train --promote` (registered by tlserve.cli).

`train` itself is training's command (training/cli.py, registered first); this module adds `--promote` and the
server flags to it and wraps its handler, so the training pipeline never imports the lifecycle.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlserve.console import EXIT_OK, CommandError

logger = logging.getLogger(__name__)

DEFAULT_SERVER = "localhost:8600"
_TRUE = {"1", "true", "yes"}


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this group's subcommands."""
    _register_models(subparsers)
    _register_promote(subparsers)
    _register_rollback(subparsers)
    _register_retrain(subparsers)
    _extend_train(subparsers)


def add_models_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("TLSERVE_MODELS_DIR", "models")),
        help="model repository (default: env TLSERVE_MODELS_DIR, else models)",
    )


_MOVES_RESOLVE = (
    "; retrain resolves at each move, and a replica that became ready during a move fails the command by name "
    "after the move (which is done)"
)
_LISTING_RESOLVES = "; a name that does not resolve is a warning and the states come from models.config"


def add_all_replicas(parser: argparse.ArgumentParser, *, listing: bool = False) -> None:
    parser.add_argument(
        "--all-replicas",
        action="store_true",
        default=os.environ.get("TLSERVE_ALL_REPLICAS", "").strip().lower() in _TRUE,
        help="resolve each --server HOST to all its addresses (IPv4, else IPv6; e.g. a Kubernetes headless Service) "
        f"and treat each as a replica{_LISTING_RESOLVES if listing else _MOVES_RESOLVE} "
        "(default: env TLSERVE_ALL_REPLICAS=1|true|yes)",
    )


def add_server(parser: argparse.ArgumentParser, *, offline: bool = True) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--server",
        default=os.environ.get("TLSERVE_MODEL_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="running model server's gRPC address, or its replicas' comma-separated: each reloads in turn "
        f"(default: env TLSERVE_MODEL_SERVER, else {DEFAULT_SERVER})",
    )
    if offline:
        group.add_argument("--offline", action="store_true", help="only rewrite models.config (server not running)")
    add_all_replicas(parser)
    parser.add_argument(
        "--server-models-dir",
        type=Path,
        help="the repository's path as the server sees it, when it mounts models/ elsewhere (e.g. /models)",
    )
    parser.add_argument("--load-timeout", type=float, default=120.0, help="seconds to wait for AVAILABLE (default 120)")
    parser.add_argument("--drain", type=float, default=1.0, help="seconds before unloading the old version (default 1)")


def _register_models(subparsers: argparse._SubParsersAction[Any]) -> None:
    models = subparsers.add_parser("models", help="list the repository's models, versions and labels")
    commands = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="models with their versions and labels")
    show = commands.add_parser("show", help="one model: versions, labels, metrics, creation time, state")
    show.add_argument("name")
    for parser in (listing, show):
        add_models_dir(parser)
        parser.add_argument(
            "--server",
            default=os.environ.get("TLSERVE_MODEL_SERVER"),
            metavar="HOST:PORT[,HOST:PORT...]",
            help="also ask this model server (or these replicas: merged state) for each version's state "
            "(models list: in --json only) (default: env TLSERVE_MODEL_SERVER; unset: only models.config)",
        )
        add_all_replicas(parser, listing=True)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)
    show.set_defaults(handler=_show)
    gc = commands.add_parser(
        "gc",
        help="remove staging directories left by killed exports (never one a running export still writes)",
        description="Delete every models/<name>/.staging-* directory whose writer is gone (its lock is free), "
        "and lockless ones (from older tlserve versions) older than --older-than seconds. Each publish does the same "
        "for its own model.",
    )
    add_models_dir(gc)
    gc.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="age after which a staging directory without a lock file counts as abandoned (default 3600)",
    )
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    gc.set_defaults(handler=_gc)


def _register_promote(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("promote", help="point a label at a version, safely (two-step move)")
    parser.add_argument("name")
    parser.add_argument("version", type=int)
    parser.add_argument("--label", default="stable", help="the label to move (default stable)")
    parser.add_argument("--reason", default="", help="recorded in the audit log")
    parser.add_argument(
        "--keep",
        type=int,
        default=0,
        help="afterwards delete unlabelled versions beyond the newest N (default 0: keep all)",
    )
    add_models_dir(parser)
    add_server(parser)
    parser.set_defaults(handler=_promote)


def _register_rollback(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("rollback", help="put the previous stable version back (from the audit log)")
    parser.add_argument("name")
    parser.add_argument("--label", default="stable", help="the label to move (default stable)")
    parser.add_argument("--reason", default="", help="recorded in the audit log")
    add_models_dir(parser)
    add_server(parser)
    parser.set_defaults(handler=_rollback)


def add_retrain_arguments(parser: argparse.ArgumentParser) -> None:
    from training.cli import add_config_arguments

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
    from promotion.gates import GateThresholds

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


def _register_retrain(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("retrain", help="warm-start retrain, publish as canary, promote if better")
    add_retrain_arguments(parser)
    add_models_dir(parser)
    add_server(parser)
    parser.set_defaults(handler=_retrain)


def server_targets(args: argparse.Namespace) -> list[str]:
    """The replicas `models list/show --server` names; none without --server.

    A name that does not resolve (e.g. no ready pod behind a headless Service) is only a warning here:
    the states then come from models.config, as when a server cannot be asked.
    """
    from promotion.replicas import check_servers, replica_targets

    if not args.server:
        return []
    check_servers(args.server, all_replicas=args.all_replicas)
    try:
        return replica_targets(args.server, all_replicas=args.all_replicas)
    except CommandError as exc:
        logger.warning("%s; showing the states models.config gives", exc)
        return []


def _extend_train(subparsers: argparse._SubParsersAction[Any]) -> None:
    """`tlserve train --promote [--server ...|--offline]`: train, publish, then move `stable` to the new version."""
    train = subparsers.choices.get("train")
    if train is None:
        return
    train.add_argument(
        "--promote",
        action="store_true",
        help="make the new version stable right away (the two-step move of `tlserve promote`); without it a "
        "model's first version becomes stable and later ones are published as candidates",
    )
    add_server(train)
    train.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from training.cli import run_train

    if not args.promote:
        return run_train(args)

    def check() -> None:  # a typo in --server fails before training, not after
        if not args.offline:
            from promotion.replicas import check_servers

            check_servers(args.server, all_replicas=args.all_replicas)

    def promote(models_dir: Path, name: str, version: int) -> None:
        from promotion.promote import move_label

        options = move_options(args)
        try:
            move_label(models_dir, name, version, options=options, reason="tlserve train --promote")
        finally:
            if options.server is not None:
                options.server.close()

    return run_train(args, before=check, after_publish=promote)


def move_options(args: argparse.Namespace) -> Any:
    """MoveOptions for one command or one retrain move; with --all-replicas the names are resolved now."""
    from promotion.promote import MoveOptions
    from promotion.replicas import connect, replica_targets

    if getattr(args, "offline", False):
        return MoveOptions(load_timeout_s=args.load_timeout, drain_s=args.drain)
    resolve = functools.partial(replica_targets, args.server, all_replicas=args.all_replicas)
    return MoveOptions(
        server=connect(resolve()),
        server_models_dir=args.server_models_dir,
        load_timeout_s=args.load_timeout,
        drain_s=args.drain,
        discover=resolve if args.all_replicas else None,
    )


def _promote(args: argparse.Namespace) -> int:
    from promotion.promote import move_label
    from promotion.retention import prune_versions
    from tlserve.audit import describe_version

    options = move_options(args)
    try:
        move = move_label(
            args.models_dir, args.name, args.version, label=args.label, options=options, reason=args.reason
        )
    finally:
        if options.server is not None:
            options.server.close()
    if not move.changed:
        print(f"{args.name}: {args.label} already at version {args.version}")
    else:
        print(f"{args.name}: {args.label} {describe_version(move.old_version)} -> {move.new_version}")
    if args.keep > 0:
        deleted = prune_versions(args.models_dir, args.name, keep=args.keep)
        if deleted:
            print(f"{args.name}: deleted versions {', '.join(map(str, deleted))}")
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    from promotion.rollback import rollback
    from tlserve.audit import describe_version

    options = move_options(args)
    try:
        move = rollback(args.models_dir, args.name, label=args.label, options=options, reason=args.reason)
    finally:
        if options.server is not None:
            options.server.close()
    print(f"{args.name}: {args.label} rolled back {describe_version(move.old_version)} -> {move.new_version}")
    return EXIT_OK


def retrain_options(args: argparse.Namespace) -> Any:
    """The typed RetrainOptions of `tlserve retrain`'s arguments (training flags become overrides)."""
    from promotion.gates import GateThresholds
    from promotion.retrain import RetrainOptions

    thresholds = GateThresholds(
        accuracy_tolerance=args.accuracy_tolerance,
        min_class_recall=args.min_class_recall,
        min_accuracy=args.min_accuracy,
        latency_factor=args.latency_factor,
        allow_class_change=args.allow_class_change,
    )
    return RetrainOptions(
        data=args.data,
        name=args.name,
        models_dir=args.models_dir,
        thresholds=thresholds,
        promote_if_better=args.promote_if_better,
        reason=args.reason,
        keep=args.keep,
        config_file=args.config,
        overrides=vars(args),
    )


@contextlib.contextmanager
def connected(args: argparse.Namespace) -> Iterator[Any]:
    """MoveOptions connected now (closed afterwards): the replicas resolved when a retrain started may be gone."""
    options = move_options(args)
    try:
        yield options
    finally:
        if options.server is not None:
            options.server.close()


def _retrain(args: argparse.Namespace) -> int:
    """Exit 0 promoted (or passed and left as canary), RetrainRefused (1) kept back."""
    from promotion.replicas import check_servers
    from promotion.retrain import RetrainRefused, retrain

    if not args.data.is_dir():  # before TensorFlow is imported: a typo costs no start-up time
        raise CommandError(f"dataset folder not found: {args.data}")
    if not args.offline:
        check_servers(args.server, all_replicas=args.all_replicas)  # a typo fails before hours of training
    try:
        result = retrain(retrain_options(args), functools.partial(connected, args), notify=print)
    except RetrainRefused as refused:
        if getattr(args, "json", False):
            print(json.dumps(refused.summary, indent=2, default=str))  # the refusing gates with their numbers
        raise
    if getattr(args, "json", False):
        print(json.dumps(result.summary, indent=2, default=str))
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from promotion.inventory import describe_repository

    models = describe_repository(args.models_dir, servers=server_targets(args))
    if args.json:
        print(json.dumps(models, indent=2))
        return EXIT_OK
    if not models:
        raise CommandError(f"no models under {args.models_dir}")
    for model in models:
        labels = ", ".join(f"{label}={version}" for label, version in sorted(model["labels"].items())) or "-"
        versions = ", ".join(str(version["version"]) for version in model["versions"]) or "-"
        live = "-" if model["live"] is None else str(model["live"])
        print(f"{model['name']}: live {live}; versions {versions}; labels {labels}")
    return EXIT_OK


def _gc(args: argparse.Namespace) -> int:
    from training.staging import collect_garbage

    if not args.models_dir.is_dir():
        raise CommandError(f"models directory not found: {args.models_dir}")
    removed = collect_garbage(args.models_dir, older_than_s=args.older_than)
    freed = sum(item.size_bytes for item in removed)
    if args.json:
        paths = [{"path": str(item.path), "bytes": item.size_bytes} for item in removed]
        print(json.dumps({"removed": paths, "freed_bytes": freed}, indent=2))
        return EXIT_OK
    for item in removed:
        print(f"removed {item.path} ({item.size_bytes / 1e6:.1f} MB)")
    print(f"{len(removed)} stale staging entries removed, {freed / 1e6:.1f} MB freed")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from promotion.inventory import describe_model

    model = describe_model(args.models_dir, args.name, servers=server_targets(args))
    if args.json:
        print(json.dumps(model, indent=2))
        return EXIT_OK
    print(
        f"{model['name']}  base_path {model['base_path']}  served {model['served'] or 'latest'}  live {model['live']}"
    )
    print(f"  {'version':>7}  {'live':<4}  {'labels':<14} {'test acc':<8}  {'created':<26} state")
    for version in model["versions"]:
        labels = ",".join(version["labels"]) or "-"
        accuracy = version["metrics"].get("test_accuracy")  # the key training.publish.summary_metrics writes
        shown = "-" if accuracy is None else f"{accuracy:.3f}"
        live = "yes" if version["live"] else "-"
        print(
            f"  {version['version']:>7}  {live:<4}  {labels:<14} {shown:<8}  {version['created_at'] or '-':<26} "
            f"{version['state']}"
        )
    print("  live: the version unpinned requests reach (stable, else the newest served); others are candidates")
    return EXIT_OK
