"""Command-line plumbing shared by every `tlserve` subcommand: the error that becomes an exit code, HOST:PORT."""

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


def split_host_port(target: str, *, flag: str = "") -> tuple[str, int]:
    """("host", port) of `host:port` or `[ipv6]:port`; a one-line CommandError (naming `flag`) otherwise."""
    host, _, port = target.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        where = f"{flag} " if flag else ""
        raise CommandError(f"{where}expected HOST:PORT, got {target!r}")
    return host, int(port)
