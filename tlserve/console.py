"""Command-line plumbing shared by every `tlserve` subcommand: the error that becomes an exit code."""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the user caused or can fix; printed as one line, never as a traceback."""

    exit_code: ClassVar[int] = EXIT_USAGE


class Refused(CommandError):
    """The command ran but declined to act (e.g. a promotion gate failed)."""

    exit_code: ClassVar[int] = EXIT_REFUSED
