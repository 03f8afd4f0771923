"""Test helpers for the embedded model server, for every engineer's tests.

    with running_model_server(models_dir) as server:              # in-process, 127.0.0.1, free port
        stub = server.prediction_stub()
    with model_server_process(models_dir, log_path) as server:    # `tlserve model-server --port 0` subprocess
        wait_until_available(server.target, "demo", version=2)
    server = ModelServerProcess(models_dir, free_port(), log_path)  # a subprocess to stop and start again
    server.start(); server.stop(); server.start()                  # ... at the same address

The context managers yield a `RunningModelServer` (`port`, `target`, `channel()`, stubs) and stop the server on
exit. Ports, polling and stopping come from `tlserve.processes` (re-exported here for older imports).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.support.gateway import subprocess_env
from tlserve.processes import LOOPBACK, free_port, start_tlserve, stop_process, wait_until

__all__ = ["LOOPBACK", "free_port", "stop_process"]  # with the helpers below; these three for older imports

# Importing TensorFlow and loading a VGG16 on 2 busy cores is slow.
READY_TIMEOUT_S = 240.0
READY_PATTERN = re.compile(r"model server listening on (?P<host>\S+):(?P<port>\d+)")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


@dataclass
class RunningModelServer:
    port: int
    rest_port: int = 0
    server: Any = None  # service.modelserver.server.ModelServer when in-process
    process: subprocess.Popen[bytes] | None = None
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


class ModelServerProcess:
    """`tlserve model-server` as a subprocess on `port` (0: it picks one, read back from its ready line).

    Its output goes to `log_path` (appended, so a restart keeps the earlier run's log). `stop()` then `start()`
    brings it back at the same address when `port` was given.
    """

    def __init__(self, models_dir: Path, port: int, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.models_dir, self.port, self.log_path = models_dir, port, log_path
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start and wait for "model server listening on HOST:PORT" (initial loads done)."""
        args = ["model-server", "--models-dir", str(self.models_dir), "--port", str(self.port), *self.extra_args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = start_tlserve(args, stdout=log, env=subprocess_env())

        def ready_line() -> re.Match[str] | None:
            return READY_PATTERN.search(self.log_path.read_bytes()[offset:].decode(errors="replace"))

        what = "the model server listening"
        ready = wait_until(ready_line, timeout_s=timeout_s, what=what, process=self.process, details=self.log_tail)
        self.port = int(ready["port"])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it hangs; the exit code (None if it never started)."""
        return None if self.process is None else stop_process(self.process)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


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

    Waits for its ready line and, with `wait_for_model`, until that model has an AVAILABLE version; its output
    goes to log_path. Stops with SIGTERM.
    """
    server = ModelServerProcess(models_dir, 0, log_path, ["--host", LOOPBACK, *extra_args])
    running = RunningModelServer(port=0)
    try:
        server.start(ready_timeout_s)
        running.port, running.process = server.port, server.process
        if wait_for_model is not None:
            wait_until_available(running.target, wait_for_model, timeout_s=ready_timeout_s)
        yield running
    finally:
        running.close_channels()
        server.stop()


def wait_until_available(target: str, model: str, version: int | None = None, timeout_s: float = 60.0) -> int:
    """Poll GetModelStatus until `version` (or any version) of `model` is AVAILABLE; returns that version."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    last_error = [""]

    def available_version() -> int | None:
        try:
            response = stub.GetModelStatus(request, timeout=5)
        except grpc.RpcError as exc:
            last_error[0] = f"{exc.code().name}: {exc.details()}"
            return None
        versions = [int(status.version) for status in response.model_version_status if status.state == available]
        return versions[0] if versions else None

    with grpc.insecure_channel(target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        what = f"{model} version {version} AVAILABLE at {target}"
        return wait_until(available_version, timeout_s=timeout_s, what=what, details=lambda: last_error[0])


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
