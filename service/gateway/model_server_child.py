"""The embedded model server as a supervised child of `tlserve serve`: started, awaited, watched and stopped.

The gateway never loads models itself; in embedded mode it runs `tlserve model-server` on the same models/ and
owns its lifetime: it waits for the "listening" line, stops the gateway if the child dies, and stops the child
(SIGTERM, then SIGKILL) when the gateway exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tlserve.console import CommandError
from tlserve.processes import LOOPBACK, ProcessExited, start_tlserve, stop_process, wait_until

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0  # importing TensorFlow and warming up a VGG16 on a busy CPU takes a while
STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class ModelServerChild:
    """A running child; `crashed_with` is its exit code if it died while the gateway was serving."""

    process: subprocess.Popen[str]
    target: str
    listening: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    crashed_with: int | None = None


@contextlib.contextmanager
def embedded_model_server(models_dir: Path, port: int, *, verbose: bool = False) -> Iterator[ModelServerChild]:
    """Run `tlserve model-server` until the block exits; yields once it listens on `port`."""
    args = [*(["-v"] if verbose else []), "model-server", "--models-dir", str(models_dir), "--port", str(port)]
    logger.info("starting the embedded model server on port %d", port)
    process = start_tlserve(
        args,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        # Own session: a terminal's Ctrl-C reaches only the gateway, which then stops the child in order.
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    child = ModelServerChild(process, f"{LOOPBACK}:{port}")
    threading.Thread(target=_relay_output, args=(child,), daemon=True, name="model-server-output").start()
    try:
        _wait_until_listening(child)
        yield child
    finally:
        child.stopping.set()
        stop_child(process)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the gateway is SIGKILLed, so no model server is orphaned."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_listening(child: ModelServerChild) -> None:
    try:
        wait_until(
            child.listening.is_set, timeout_s=READY_TIMEOUT_S, what="listening", interval_s=0.2, process=child.process
        )
    except ProcessExited as exited:
        message = f"the embedded model server exited with code {exited.returncode} before listening (see above)"
        raise CommandError(message) from None
    except TimeoutError:
        raise CommandError(f"the embedded model server did not listen within {READY_TIMEOUT_S:.0f}s") from None


def _relay_output(child: ModelServerChild) -> None:
    """Copy the child's stdout to ours (keeps its pipe drained); flag "listening"; notice an unexpected exit."""
    assert child.process.stdout is not None
    for line in child.process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if "listening" in line.lower():
            child.listening.set()
    # End of output: the child has exited (or is exiting).
    if child.listening.is_set() and not child.stopping.is_set():
        child.crashed_with = child.process.wait()
        logger.error("the embedded model server exited with code %s; stopping the gateway", child.crashed_with)
        # A gateway without its model server would only answer 503: stop it (gracefully) so a supervisor sees it.
        os.kill(os.getpid(), signal.SIGTERM)


def stop_child(process: subprocess.Popen[str]) -> None:
    """SIGTERM, a grace period, then SIGKILL."""
    stop_process(process, STOP_TIMEOUT_S, name="the embedded model server")
    logger.info("embedded model server stopped (exit code %s)", process.returncode)
