"""Test helpers for the embedded model server, for every engineer's tests.

    with running_model_server(models_dir) as server:              # in-process, 127.0.0.1, free port
        stub = server.prediction_stub()
    with model_server_process(models_dir, log_path) as server:    # `tlserve model-server --port 0` subprocess
        wait_until_available(server.target, "demo", version=2)

Both yield a `RunningModelServer` (`port`, `target`, `channel()`, stubs) and stop the server on exit.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

LOOPBACK = "127.0.0.1"
READY_PATTERN = re.compile(r"model server listening on (?P<host>\S+):(?P<port>\d+)")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningModelServer:
    port: int
    rest_port: int = 0
    server: Any = None  # service.modelserver.server.ModelServer when in-process
    process: subprocess.Popen[str] | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._channels.append(channel)
        return channel

    def prediction_stub(self) -> Any:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel())

    def model_stub(self) -> Any:
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel())

    def close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


def free_port() -> int:
    """A currently free loopback TCP port (for servers that need the number before they start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_model_server(models_dir: Path | None = None, **settings: Any) -> Iterator[RunningModelServer]:
    """An in-process ModelServer on 127.0.0.1:<free>; keyword arguments are ModelServerSettings fields.

    Polls the file system every 0.2 s unless told otherwise, so tests that drop a version in are quick.
    """
    from service.modelserver.server import ModelServer
    from service.modelserver.settings import ModelServerSettings

    settings.setdefault("host", LOOPBACK)
    settings.setdefault("port", 0)
    settings.setdefault("file_system_poll_wait_seconds", 0.2)
    if models_dir is not None:
        settings["models_dir"] = models_dir
    server = ModelServer(ModelServerSettings(**settings))
    port = server.start()
    running = RunningModelServer(port=port, rest_port=server.rest_port, server=server)
    try:
        yield running
    finally:
        running.close_channels()
        server.stop(0)


@contextlib.contextmanager
def model_server_process(
    models_dir: Path,
    log_path: Path,
    extra_args: Sequence[str] = (),
    *,
    wait_for_model: str | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[RunningModelServer]:
    """`tlserve model-server --models-dir DIR --host 127.0.0.1 --port 0 ...` until the block exits.

    Waits for the "model server listening on HOST:PORT" line (initial loads done) and, with `wait_for_model`,
    until that model has an AVAILABLE version; stderr (the server's log) goes to log_path. Stops with SIGTERM.
    """
    command = [sys.executable, "-m", "tlserve", "model-server", "--models-dir", str(models_dir)]
    command += ["--host", LOOPBACK, "--port", "0", *extra_args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    running = RunningModelServer(port=0, process=process)
    lines: queue.Queue[str] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    pump.start()
    try:
        running.port = _wait_for_ready_line(process, lines, log_path, ready_timeout_s)
        if wait_for_model is not None:
            wait_until_available(running.target, wait_for_model, timeout_s=ready_timeout_s)
        yield running
    finally:
        running.close_channels()
        stop_process(process)
        pump.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _wait_for_ready_line(
    process: subprocess.Popen[str], lines: queue.Queue[str], log_path: Path, timeout_s: float
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError(f"model server exited with {process.returncode}:\n{_tail(log_path)}") from None
            continue
        match = READY_PATTERN.search(line)
        if match:
            return int(match["port"])
    raise TimeoutError(f"model server not ready after {timeout_s:.0f}s:\n{_tail(log_path)}")


def _pump(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:  # keeps the pipe drained for the server's whole life
        lines.put(line)


def _tail(log_path: Path, count: int = 30) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-count:])


def stop_process(process: subprocess.Popen[str], timeout_s: float = 30.0) -> int:
    """SIGTERM, wait, SIGKILL if it hangs; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def wait_until_available(target: str, model: str, version: int | None = None, timeout_s: float = 60.0) -> int:
    """Poll GetModelStatus until `version` (or any version) of `model` is AVAILABLE; returns that version."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    deadline = time.monotonic() + timeout_s
    last_error = ""
    with grpc.insecure_channel(target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                response = stub.GetModelStatus(request, timeout=5)
                for status in response.model_version_status:
                    if status.state == available:
                        return int(status.version)
            except grpc.RpcError as exc:
                last_error = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.1)
    raise TimeoutError(f"{model} version {version} not AVAILABLE at {target} after {timeout_s:.0f}s {last_error}")


def predict_request(images: Sequence[bytes], model: str = "demo", **spec: Any) -> Any:
    """A TF Serving PredictRequest with `image_bytes`; spec: version=, version_label=, signature_name=."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    if "version_label" in spec:
        request.model_spec.version_label = spec.pop("version_label")
    request.model_spec.signature_name = spec.pop("signature_name", "serving_default")
    assert not spec, f"unknown ModelSpec fields {sorted(spec)}"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request
