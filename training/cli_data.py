"""`tlserve data sample` (write the generated demo dataset) and `tlserve data check` (report bad and odd images).

Registered by tlserve.cli; the handlers import the data package lazily so `tlserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tlserve.console import EXIT_OK, CommandError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
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
