"""A fake TF Serving ModelService on 127.0.0.1:0 that enforces TF Serving's label rule, for promotion tests.

Like TF Serving, it refuses a config whose labels point at versions that are not AVAILABLE *before* the
reload, so a one-step label move to a freshly added version fails here exactly as it does there.
"""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, model_service_pb2_grpc

from tlserve.contract import list_versions

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
LOADING = get_model_status_pb2.ModelVersionStatus.LOADING
FAILED_PRECONDITION = 9


class FakeModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models_dir: Path, never_load: set[int] | None = None) -> None:
        self.models_dir = models_dir
        self.never_load = never_load or set()
        self.available: dict[str, set[int]] = {}
        self.aspired: dict[str, set[int]] = {}
        self.accepted: list = []  # every config the fake accepted, in order
        self.rejected: list[str] = []
        self.lock = threading.Lock()

    def _aspired(self, entry) -> set[int]:
        base = Path(entry.base_path)
        on_disk = list_versions(base if base.is_absolute() else self.models_dir / base)
        if entry.model_version_policy.HasField("specific"):
            return set(entry.model_version_policy.specific.versions) & set(on_disk)
        return set(on_disk[-1:])

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802 (gRPC method name)
        with self.lock:
            for entry in request.config.model_config_list.config:
                for label, version in entry.version_labels.items():
                    if version not in self.available.get(entry.name, set()):
                        message = f"label {label} -> {version}: version not AVAILABLE"
                        self.rejected.append(message)
                        return model_management_pb2.ReloadConfigResponse(
                            status={"error_code": FAILED_PRECONDITION, "error_message": message}
                        )
            self.accepted.append(request.config)
            names = set()
            for entry in request.config.model_config_list.config:
                names.add(entry.name)
                self.aspired[entry.name] = self._aspired(entry)
                self.available[entry.name] = self.aspired[entry.name] - self.never_load
            for name in set(self.aspired) - names:
                del self.aspired[name], self.available[name]
        return model_management_pb2.ReloadConfigResponse()

    def GetModelStatus(self, request, context):  # noqa: N802
        name = request.model_spec.name
        with self.lock:
            if name not in self.aspired:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            statuses = [
                get_model_status_pb2.ModelVersionStatus(
                    version=version, state=AVAILABLE if version in self.available[name] else LOADING
                )
                for version in sorted(self.aspired[name])
            ]
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)

    def boot(self, config) -> None:
        """Serve `config` as a server started with it would (startup may label versions as they load)."""
        with self.lock:
            for entry in config.model_config_list.config:
                self.aspired[entry.name] = self._aspired(entry)
                self.available[entry.name] = self.aspired[entry.name] - self.never_load
            self.accepted.append(config)

    def last_labels(self, name: str) -> dict[str, int]:
        for entry in self.accepted[-1].model_config_list.config:
            if entry.name == name:
                return dict(entry.version_labels)
        return {}


def start_fake(service: FakeModelService) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
