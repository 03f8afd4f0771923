"""Run real `tlserve serve` processes on free loopback ports, wait until they are ready, stop them.

Used by the end-to-end tests, the promotion tests and bench/serve_bench.py (ports, polling and stopping are
`tlserve.processes`; a model server process alone is `tests.support.modelserver.ModelServerProcess`):

    with running_serve(models_dir) as gateway:      # embedded model server as its child
        httpx.post(f"{gateway.http_url}/predict", ...)
        grpc.insecure_channel(gateway.grpc_target)
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tlserve.processes import LOOPBACK, STOP_TIMEOUT_S, free_ports, start_tlserve, stop_process, wait_until

# Importing TensorFlow twice (model server + gateway) and loading a VGG16 on 2 busy cores is slow.
READY_TIMEOUT_S = 240.0

# Start attempts of `running_serve` when a port picked by `free_ports` was taken before the process bound it.
PORT_RACE_ATTEMPTS = 3
# What `tlserve serve` (gateway pre-check, uvicorn, gRPC) and its model server child log when a port is taken.
PORT_IN_USE = re.compile(r"already in use|address in use|in use\?|failed to bind|cannot bind", re.IGNORECASE)


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

        def answers_200() -> bool:
            with contextlib.suppress(httpx.TransportError):
                # Above the 2 s the gateway gives its own upstream check, so a slow box still gets an answer.
                return httpx.get(self.http_url + route, timeout=10.0).status_code == 200
            return False

        what = f"tlserve serve ready at {route}"
        wait_until(
            answers_200, timeout_s=timeout_s, what=what, interval_s=0.25, process=self.process, details=self.log_tail
        )

    def metrics_text(self) -> str:
        response = httpx.get(self.http_url + "/metrics", timeout=10.0)
        response.raise_for_status()
        return response.text

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful: the gateway stops its model server child), then SIGKILL; returns the exit code."""
        returncode = stop_process(self.process, timeout_s)
        if self._log_file is not None:
            self._log_file.close()
        return returncode


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
    args = ["serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    if models_dir is not None:
        args += ["--models-dir", str(models_dir)]
    if upstream is None:
        args += ["--model-server-port", str(model_server_port)]
    else:
        args += ["--upstream", upstream]
        # The gateway cannot list an upstream's models: name them (the repository it loads, else the tests' model).
        if models_dir is not None:
            args += ["--repository", str(models_dir)]
        elif "--default-model" not in extra_args and "TLSERVE_DEFAULT_MODEL" not in (env or {}):
            args += ["--default-model", "demo"]
    args += list(extra_args)
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="tlserve-serve-", suffix=".log")[1])
    log_file = log_path.open("wb")
    process = start_tlserve(args, stdout=log_file, env=subprocess_env(env))
    ms_port = None if upstream else model_server_port
    return ServeProcess(process, http_port, grpc_port, ms_port, log_path, models_dir=models_dir, _log_file=log_file)


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
