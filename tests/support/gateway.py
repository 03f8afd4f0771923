"""Run real `tlserve serve` processes on free loopback ports, wait until they are ready, stop them.

Used by the end-to-end tests, the promotion tests and bench/serve_bench.py:

    with running_serve(models_dir) as gateway:      # embedded model server as its child
        httpx.post(f"{gateway.http_url}/predict", ...)
        grpc.insecure_channel(gateway.grpc_target)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

LOOPBACK = "127.0.0.1"
# Importing TensorFlow twice (model server + gateway) and loading a VGG16 on 2 busy cores is slow.
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


# Start attempts of `running_serve` when a port picked by `free_ports` was taken before the process bound it.
PORT_RACE_ATTEMPTS = 3
# What `tlserve serve` (gateway pre-check, uvicorn, gRPC) and its model server child log when a port is taken.
PORT_IN_USE = re.compile(r"already in use|address in use|in use\?|failed to bind|cannot bind", re.IGNORECASE)


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
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, quietened, with the repository importable, plus `extra`."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@dataclass
class ServeProcess:
    """One running `tlserve serve` (and, without --upstream, its embedded model server child)."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    model_server_port: int | None
    log_path: Path
    models_dir: Path | None = None
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def model_server_target(self) -> str:
        assert self.model_server_port is not None, "this gateway uses an external upstream"
        return f"{LOOPBACK}:{self.model_server_port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, route: str = "/readyz") -> None:
        """Poll `route` until it answers 200; fail with the process log if it exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tlserve serve exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                # Above the 2 s the gateway gives its own upstream check, so a slow box still gets an answer.
                if httpx.get(self.http_url + route, timeout=10.0).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"tlserve serve not ready at {route} after {timeout_s:.0f}s:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        response = httpx.get(self.http_url + "/metrics", timeout=10.0)
        response.raise_for_status()
        return response.text

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful: the gateway stops its model server child), then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
        return self.process.returncode


def start_serve(
    models_dir: Path | None = None,
    *,
    upstream: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
) -> ServeProcess:
    """Start `tlserve serve` on fresh ports; returns at once (call `wait_ready`)."""
    http_port, grpc_port, model_server_port = free_ports(3)
    command = [sys.executable, "-m", "tlserve", "serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    if models_dir is not None:
        command += ["--models-dir", str(models_dir)]
    if upstream is None:
        command += ["--model-server-port", str(model_server_port)]
    else:
        command += ["--upstream", upstream]
        # The gateway cannot list an upstream's models: name them (the repository it loads, else the tests' model).
        if models_dir is not None:
            command += ["--repository", str(models_dir)]
        elif "--default-model" not in extra_args and "TLSERVE_DEFAULT_MODEL" not in (env or {}):
            command += ["--default-model", "demo"]
    command += list(extra_args)
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="tlserve-serve-", suffix=".log")[1])
    log_file = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=subprocess_env(env))
    ms_port = None if upstream else model_server_port
    return ServeProcess(process, http_port, grpc_port, ms_port, log_path, models_dir=models_dir, _log_file=log_file)


class ModelServerProcess:
    """`tlserve model-server` alone on a fixed port (so it can be stopped and started again at the same address)."""

    def __init__(self, models_dir: Path, port: int, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.models_dir, self.port, self.log_path = models_dir, port, log_path
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "tlserve", "model-server", "--models-dir", str(self.models_dir)]
        command += ["--port", str(self.port), *self.extra_args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
        self._wait_listening(offset)

    def _wait_listening(self, offset: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "listening" in self.log_path.read_bytes()[offset:].decode(errors="replace").lower():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"model server exited with {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"model server did not listen:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


@contextlib.contextmanager
def running_serve(
    models_dir: Path | None = None,
    *,
    upstream: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_route: str = "/readyz",
    log_path: Path | None = None,
) -> Iterator[ServeProcess]:
    """`start_serve` + `wait_ready`, stopped on exit even if the block fails.

    `free_ports` only says a port was free a moment ago; if another process takes one before `tlserve serve`
    binds it, the process exits early saying so, and this starts again on fresh ports (PORT_RACE_ATTEMPTS).
    """
    for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
        gateway = start_serve(models_dir, upstream=upstream, env=env, extra_args=extra_args, log_path=log_path)
        try:
            gateway.wait_ready(route=ready_route)
        except RuntimeError:
            gateway.stop()
            if attempt < PORT_RACE_ATTEMPTS and PORT_IN_USE.search(gateway.log_path.read_text(errors="replace")):
                continue
            raise
        except BaseException:
            gateway.stop()
            raise
        break
    try:
        yield gateway
    finally:
        gateway.stop()
