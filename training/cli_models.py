"""`tlserve models list|show`, `tlserve promote`, `tlserve rollback`, `tlserve retrain` (registered by tlserve.cli)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
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


def _register_retrain(subparsers: argparse._SubParsersAction[Any]) -> None:
    from training.retrain import add_retrain_arguments

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
    from training.replicas import check_servers, replica_targets

    if not args.server:
        return []
    check_servers(args.server, all_replicas=args.all_replicas)
    try:
        return replica_targets(args.server, all_replicas=args.all_replicas)
    except CommandError as exc:
        logger.warning("%s; showing the states models.config gives", exc)
        return []


def move_options(args: argparse.Namespace) -> Any:
    """MoveOptions for one command or one retrain move; with --all-replicas the names are resolved now."""
    from training.promote import MoveOptions
    from training.replicas import connect, replica_targets

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
    from training.audit import describe_version
    from training.promote import move_label
    from training.retention import prune_versions

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
    from training.audit import describe_version
    from training.rollback import rollback

    options = move_options(args)
    try:
        move = rollback(args.models_dir, args.name, label=args.label, options=options, reason=args.reason)
    finally:
        if options.server is not None:
            options.server.close()
    print(f"{args.name}: {args.label} rolled back {describe_version(move.old_version)} -> {move.new_version}")
    return EXIT_OK


def _retrain(args: argparse.Namespace) -> int:
    from training.retrain import run_retrain

    return run_retrain(args)


def _list(args: argparse.Namespace) -> int:
    from training.inventory import describe_repository

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


def _show(args: argparse.Namespace) -> int:
    from training.inventory import describe_model

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
