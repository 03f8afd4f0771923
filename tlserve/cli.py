"""The `tlserve` command: one argparse tree whose subcommands live next to the code they drive.

Each module in COMMAND_MODULES exposes `register(subparsers)` and keeps heavy imports (TensorFlow)
inside its handlers, so `tlserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from tlserve import __version__
from tlserve.console import EXIT_USAGE, CommandError
from tlserve.tf_logging import log_level, quiet_tensorflow

COMMAND_MODULES = (
    "training.cli",
    "promotion.cli",
    "service.modelserver.cli",
    "service.gateway.cli",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlserve",
        description="Train an image classifier by transfer learning, publish it as a TF Serving "
        "version and serve it over HTTP and gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"tlserve {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def configure_logging(verbose: bool) -> None:
    """Python logging at --verbose / $TLSERVE_LOG_LEVEL (default INFO); TensorFlow's C++ lines only at DEBUG."""
    level = log_level(verbose)
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Before any handler imports TensorFlow: its C++ logs (CUDA probing, oneDNN notices) drown the useful lines.
    quiet_tensorflow(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    configure_logging(args.verbose)
    try:
        return handler(args)
    except CommandError as exc:
        print(f"tlserve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tlserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
