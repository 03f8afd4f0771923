"""`tlserve features ls` (what the persistent feature store holds) and `tlserve features prune` (by age or size).

Registered by tlserve.cli; TensorFlow-free (the store is plain `.npy` files).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tlserve.console import EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `features ls` and `features prune`."""
    features = subparsers.add_parser("features", help="inspect or prune the persistent base-feature store")
    commands = features.add_subparsers(dest="features_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("ls", help="entries and size on disk per base and image size")
    _add_store_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.set_defaults(handler=run_ls)
    pruning = commands.add_parser("prune", help="delete entries by age and/or total size (oldest first)")
    _add_store_arguments(pruning)
    pruning.add_argument("--older-than-days", type=float, help="delete entries written more than this long ago")
    pruning.add_argument("--max-mb", type=float, help="then delete the oldest until at most this many MB remain")
    pruning.set_defaults(handler=run_prune)


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feature-store", default="", help="store folder (env TLSERVE_FEATURE_STORE)")
    parser.add_argument("--runs-dir", default="runs", help="default store: RUNS_DIR/.features")


def run_ls(args: argparse.Namespace) -> int:
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


def run_prune(args: argparse.Namespace) -> int:
    from training.feature_store import prune, store_path

    root = store_path(args.feature_store, args.runs_dir)
    older_than_s = None if args.older_than_days is None else args.older_than_days * 86400
    max_bytes = None if args.max_mb is None else int(args.max_mb * 1e6)
    removed, freed = prune(root, older_than_s=older_than_s, max_bytes=max_bytes)
    print(f"{root}: removed {removed} entries, freed {freed / 1e6:.1f} MB")
    return EXIT_OK
