"""The `tlserve` entry point: every documented subcommand is registered, errors become exit codes."""

from __future__ import annotations

import argparse

import pytest

from tlserve import cli
from tlserve.console import EXIT_REFUSED, EXIT_USAGE, CommandError, Refused

DESIGN_COMMANDS = {
    "data", "train", "evaluate", "sweep", "models", "promote", "rollback", "retrain",
    "serve", "model-server", "predict",
}  # fmt: skip


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def test_every_design_command_is_registered() -> None:
    assert set(subcommands(cli.build_parser()).choices) >= DESIGN_COMMANDS


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == EXIT_USAGE
    assert "usage: tlserve" in capsys.readouterr().out


@pytest.mark.parametrize(("error", "code"), [(CommandError("bad input"), EXIT_USAGE), (Refused("gate"), EXIT_REFUSED)])
def test_command_errors_become_one_line_and_their_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: CommandError, code: int
) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise error

    parser = cli.build_parser()
    subcommands(parser).add_parser("boom").set_defaults(handler=fail)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["boom"]) == code
    err = capsys.readouterr().err
    assert err == f"tlserve: error: {error}\n"
