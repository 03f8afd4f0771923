"""Child processes and ports, for whatever starts servers: `tlserve serve` (its model server child), tests, bench.

port = free_port()
process = start_tlserve(["model-server", "--port", str(port)], stdout=log)
wait_until(lambda: is_listening(), timeout_s=60, what="the model server listening", process=process)
stop_process(process)                  # SIGTERM, a grace period, then SIGKILL
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 30.0
Result = TypeVar("Result")


class ProcessExited(RuntimeError):
    """The process being waited on exited first; `returncode` is its exit code."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (sockets held open together so none repeats).

    Probed on all interfaces (""), as the gateway and model server bind them, so a port taken on another
    interface is not reported free.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    """One port that was free a moment ago (for a server that needs its number before it starts)."""
    return free_ports(1)[0]


def wait_until(
    condition: Callable[[], Result],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    process: subprocess.Popen[Any] | None = None,
    details: Callable[[], str] = lambda: "",
) -> Result:
    """Call `condition` every `interval_s` until it returns something truthy, and return that.

    Raises TimeoutError once `timeout_s` has passed, or ProcessExited as soon as `process` (if given) has exited;
    both messages name `what` and end with `details()` (a log tail, the last error seen).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            message = f"process exited with code {process.returncode} before {what}"
            raise ProcessExited(_with_details(message, details), process.returncode)
        if time.monotonic() >= deadline:
            raise TimeoutError(_with_details(f"{what}: not within {timeout_s:.0f}s", details))
        time.sleep(interval_s)


def _with_details(message: str, details: Callable[[], str]) -> str:
    extra = details()
    return f"{message}\n{extra}" if extra else message


def start_tlserve(
    args: Sequence[str],
    *,
    stdout: IO[Any] | int | None,
    stderr: IO[Any] | int | None = subprocess.STDOUT,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[Any]:
    """`python -m tlserve ARGS` with this interpreter (so it runs the same code as its parent); returns at once."""
    command = [sys.executable, "-m", "tlserve", *args]
    return subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, **popen)


def stop_process(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S, *, name: str = "") -> int:
    """SIGTERM (a graceful stop), wait up to `timeout_s`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %.0fs; killing it", name or f"process {process.pid}", timeout_s)
            process.kill()
            process.wait()
    return int(process.returncode)
