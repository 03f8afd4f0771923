"""The embedded model server as a child process of `tlserve serve`: spawned, awaited and stopped.

The gateway never loads models itself; in embedded mode it runs `tlserve model-server` on the same models/,
bound to loopback only (the gateway is its only client, and ModelService can unload and re-point models).
`service.gateway.supervisor` keeps it running: it restarts a child that dies and gives up after a crash budget.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlserve.console import CommandError
from tlserve.processes import LOOPBACK, ProcessExited, stop_process, wait_until

__all__ = ["LOOPBACK", "ModelServerChild", "model_server_command", "spawn_child", "stop_child", "wait_until_listening"]

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0  # importing TensorFlow and warming up a VGG16 on a busy CPU takes a while
STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class ModelServerChild:
    """A running child process; `listening` is set once it printed its "listening" line."""

    process: subprocess.Popen[str]
    listening: threading.Event = field(default_factory=threading.Event)


def model_server_command(
    models_dir: Path, port: int, *, max_request_pixels: int | None = None, verbose: bool = False
) -> list[str]:
    """`tlserve model-server` on loopback: nothing but this gateway may reach ModelService (reload, unload).

    `max_request_pixels` is the gateway's own budget: the child refuses what the gateway would refuse, whoever asks.
    """
    command = [sys.executable, "-m", "tlserve", *(["-v"] if verbose else [])]
    # --host beats TLSERVE_MODEL_SERVER_HOST from the environment: the child must never listen on other hosts.
    command += ["model-server", "--models-dir", str(models_dir), "--host", LOOPBACK, "--port", str(port)]
    if max_request_pixels is not None:
        command += ["--max-request-pixels", str(max_request_pixels)]
    return command


def spawn_child(command: Sequence[str]) -> ModelServerChild:
    """Start `command`, relaying its stdout to ours; returns at once (see `wait_until_listening`)."""
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        text=True,
        # Own session: a terminal's Ctrl-C reaches only the gateway, which then stops the child in order.
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    child = ModelServerChild(process)
    threading.Thread(target=_relay_output, args=(child,), daemon=True, name="model-server-output").start()
    return child


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the gateway is SIGKILLed, so no model server is orphaned."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until_listening(child: ModelServerChild, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until the child says it listens; CommandError if it exits first or takes longer than `timeout_s`."""
    try:
        wait_until(child.listening.is_set, timeout_s=timeout_s, what="listening", interval_s=0.2, process=child.process)
    except ProcessExited as exited:
        message = f"the embedded model server exited with code {exited.returncode} before listening (see above)"
        raise CommandError(message) from None
    except TimeoutError:
        raise CommandError(f"the embedded model server did not listen within {timeout_s:.0f}s") from None


def _relay_output(child: ModelServerChild) -> None:
    """Copy the child's stdout to ours (keeps its pipe drained) and flag its "listening" line."""
    assert child.process.stdout is not None
    with child.process.stdout:  # closed at the child's end of output
        for line in child.process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if "listening" in line.lower():
                child.listening.set()


def stop_child(process: subprocess.Popen[str]) -> None:
    """SIGTERM, a grace period, then SIGKILL."""
    stop_process(process, STOP_TIMEOUT_S, name="the embedded model server")
    logger.info("embedded model server stopped (exit code %s)", process.returncode)
