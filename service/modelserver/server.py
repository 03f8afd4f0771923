"""Assembly of the embedded model server: config → manager → batcher → gRPC (+ optional REST) → pollers.

server = ModelServer(ModelServerSettings(models_dir=Path("models"), port=0))
port = server.start()      # initial models are loaded (or failed) when this returns
...
server.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from service.modelserver.batching import Batcher
from service.modelserver.batching_config import default_batching_options, read_batching_parameters
from service.modelserver.config import (
    ModelServerConfig,
    models_dir_config,
    read_model_server_config,
    single_model_config,
)
from service.modelserver.core import ServingCore
from service.modelserver.errors import ServingError
from service.modelserver.manager import ModelManager
from service.modelserver.metrics import ServerMetrics
from service.modelserver.servable import Servable, load_servable
from service.modelserver.settings import ModelServerSettings

logger = logging.getLogger(__name__)


class PeriodicTask:
    """Runs `action` every `interval_s` on a daemon thread until stopped; errors are logged, never fatal."""

    def __init__(self, name: str, interval_s: float, action: Callable[[], None]) -> None:
        self._action = action
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._action()
            except Exception:
                logger.exception("%s failed", self._thread.name)


def _add_health_service(server: grpc.Server) -> Any:
    """grpc.health.v1.Health answering SERVING for "" (TF Serving's --enable_grpc_healthcheck_service)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


class ModelServer:
    """The embedded TF-Serving-protocol server; `start()` returns the bound gRPC port."""

    def __init__(self, settings: ModelServerSettings) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.manager = ModelManager(
            self._load,
            allow_labels_for_unavailable=settings.allow_version_labels_for_unavailable_models,
            max_load_retries=settings.max_num_load_retries,
            load_retry_interval_s=settings.load_retry_interval_s,
        )
        self.batcher: Batcher | None = None
        self.core: ServingCore | None = None
        self.port = 0
        self.rest_port = 0
        self._grpc_server: grpc.Server | None = None
        self._rest: Any = None
        self._health: Any = None
        self._tasks: list[PeriodicTask] = []
        self._config_text: str | None = None
        self.last_config_error: str | None = None  # why the last polled config change was refused
        self._stopped = threading.Event()

    # ---- assembly ------------------------------------------------------------------------------------------

    def initial_config(self) -> tuple[ModelServerConfig, Path]:
        """The config TF Serving would start with, and the directory relative base paths are resolved against."""
        settings = self.settings
        if settings.model_config_file is not None:
            config = read_model_server_config(settings.model_config_file)
            self._config_text = settings.model_config_file.read_text(encoding="utf-8")
            return config, settings.model_config_file.parent.resolve()
        if settings.model_name and settings.model_base_path is not None:
            return single_model_config(settings.model_name, settings.model_base_path), Path.cwd()
        if not settings.models_dir.is_dir():
            logger.warning("models directory %s does not exist; serving no models", settings.models_dir)
        return models_dir_config(settings.models_dir), settings.models_dir.resolve()

    def start(self) -> int:
        config, config_root = self.initial_config()
        if self.settings.enable_batching or self.settings.batching_parameters_file is not None:
            options = (
                read_batching_parameters(self.settings.batching_parameters_file)
                if self.settings.batching_parameters_file is not None
                else default_batching_options()
            )
            self.batcher = Batcher(options, self.metrics)
            self.batcher.start()
            logger.info("server-side batching on: %s", options)
        self.core = ServingCore(
            self.manager,
            metrics=self.metrics,
            batcher=self.batcher,
            config_root=config_root,
            max_request_pixels=self.settings.max_request_pixels,
            max_inflight_pixels=self.settings.max_inflight_pixels,
        )
        self.manager.apply_config(config, initial=True)
        self.port = self._start_grpc(self.core)
        if self.settings.rest_api_port != 0:
            self._start_rest(self.core)
        self._start_pollers()
        return self.port

    def _load(self, name: str, version: int, path: Path) -> Servable:
        started = time.perf_counter()
        servable = load_servable(name, version, path, warm_up=self.settings.enable_model_warmup)
        self.metrics.load_latency.observe((time.perf_counter() - started) * 1e6, str(path))
        return servable

    def _start_grpc(self, core: ServingCore) -> int:
        from service.modelserver.servicer import add_servicers

        size = self.settings.grpc_max_message_bytes
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.settings.grpc_max_threads, thread_name_prefix="grpc"),
            options=[("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)],
        )
        add_servicers(server, core)
        if self.settings.enable_grpc_healthcheck_service:
            self._health = _add_health_service(server)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises this when the address is taken
            raise ServingError(f"cannot bind gRPC port {address}: {exc}") from exc
        if port == 0:
            raise ServingError(f"cannot bind gRPC port {address}")
        server.start()
        self._grpc_server = server
        return int(port)

    def _start_rest(self, core: ServingCore) -> None:
        from service.modelserver.rest import RestServer

        port = 0 if self.settings.rest_api_port == -1 else self.settings.rest_api_port
        self._rest = RestServer(core, self.settings.host, port)
        self.rest_port = self._rest.start()

    def _start_pollers(self) -> None:
        if self.settings.file_system_poll_wait_seconds > 0:
            self._tasks.append(
                PeriodicTask("file-system-poller", self.settings.file_system_poll_wait_seconds, self.manager.poll)
            )
        if self.settings.model_config_file is not None and self.settings.model_config_file_poll_wait_seconds > 0:
            self._tasks.append(
                PeriodicTask(
                    "config-file-poller", self.settings.model_config_file_poll_wait_seconds, self.reread_config
                )
            )
        for task in self._tasks:
            task.start()

    def reread_config(self) -> None:
        """Config-file polling: apply the file when its text changed; a bad file is logged and the old config kept."""
        path = self.settings.model_config_file
        if path is None:
            return
        text = path.read_text(encoding="utf-8")
        if text == self._config_text:
            return
        try:
            self.manager.apply_config(read_model_server_config(path))
        except ServingError as exc:
            logger.error("not applying changed %s: %s", path, exc.message)
            self.last_config_error = exc.message
        self._config_text = text

    # ---- shutdown ------------------------------------------------------------------------------------------

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let in-flight calls finish (up to the grace period), then unload everything."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        for task in self._tasks:
            task.stop()
        self._tasks.clear()
        if self._rest is not None:
            self._rest.stop()
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
        if self.batcher is not None:
            self.batcher.stop()
        self.manager.unload_everything()
        self._stopped.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
