"""A small synchronous client for a running model server's ModelService (TF Serving or the embedded one).

Promotion needs exactly three things from it: reload a config, read version states, and replay
warmup requests through PredictionService for the infra gate. `ServingClient` is that interface, which
one `ModelServerClient` and a `promotion.replicas.ReplicaGroup` of several both offer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, Self

from tlserve.console import CommandError

logger = logging.getLogger(__name__)

AVAILABLE = "AVAILABLE"
END = "END"


class ServerError(CommandError):
    """The model server could not be reached or rejected a request; one line, with the server's reason."""


class ServingClient(Protocol):
    """What promotion, the infra gate and `models show` use: one model server, or several replicas as one."""

    @property
    def target(self) -> str: ...

    @property
    def replicas(self) -> Sequence[ModelServerClient]: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def close(self) -> None: ...

    def reload(self, config: Any) -> None: ...

    def version_states(self, name: str) -> dict[int, str]: ...

    def wait_available(self, name: str, version: int, *, timeout_s: float, poll_s: float = 0.1) -> None: ...

    def predict(self, request: Any, *, timeout_s: float | None = None) -> Any: ...


class ModelServerClient:
    """A gRPC connection to one model server; use as a context manager so the channel is closed."""

    def __init__(self, target: str, *, rpc_timeout_s: float = 30.0) -> None:
        import grpc

        from tlserve.protocol import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target = target
        self.rpc_timeout_s = rpc_timeout_s
        self._channel = grpc.insecure_channel(target)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def replicas(self) -> tuple[ModelServerClient]:
        """A replica group of one: itself."""
        return (self,)

    def close(self) -> None:
        self._channel.close()

    def reload(self, config: Any) -> None:
        """HandleReloadConfigRequest; raises ServerError when the server refuses the config."""
        from tlserve.protocol import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest(config=config)
        response = self._call(self._models.HandleReloadConfigRequest, request, "reload config")
        if response.status.error_code != 0:
            raise ServerError(f"model server {self.target} rejected the config: {response.status.error_message}")

    def version_states(self, name: str) -> dict[int, str]:
        """{version: state name} as GetModelStatus reports them; empty when the server does not know the model."""
        import grpc

        from tlserve.protocol import get_model_status_pb2, model_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
        try:
            response = self._models.GetModelStatus(request, timeout=self.rpc_timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise self._error("get model status", exc) from exc
        state_names = get_model_status_pb2.ModelVersionStatus.State
        return {status.version: state_names.Name(status.state) for status in response.model_version_status}

    def wait_available(self, name: str, version: int, *, timeout_s: float, poll_s: float = 0.1) -> None:
        """Block until `version` is AVAILABLE; TimeoutError names the last state seen."""
        self.wait_until(name, version, deadline=time.monotonic() + timeout_s, timeout_s=timeout_s, poll_s=poll_s)

    def wait_until(self, name: str, version: int, *, deadline: float, timeout_s: float, poll_s: float = 0.1) -> None:
        """wait_available up to a monotonic `deadline` shared with other waits; a timeout names `timeout_s`."""
        state = "UNKNOWN"
        while True:
            state = self.version_states(name).get(version, "UNKNOWN")
            if state == AVAILABLE:
                return
            if state == END:
                raise TimeoutError(f"{name} version {version} failed to load (state END)")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{name} version {version} not AVAILABLE after {timeout_s:g} s (state {state})")
            time.sleep(poll_s)

    def predict(self, request: Any, *, timeout_s: float | None = None) -> Any:
        return self._call(self._predictions.Predict, request, "predict", timeout_s)

    def _call(self, method: Any, request: Any, what: str, timeout_s: float | None = None) -> Any:
        import grpc

        try:
            return method(request, timeout=timeout_s or self.rpc_timeout_s)
        except grpc.RpcError as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Any) -> ServerError:
        return ServerError(f"{what} on model server {self.target} failed: {exc.code().name}: {exc.details()}")
