"""The served set of models: version discovery, availability-preserving load/unload, labels, request resolution.

Mirrors TF Serving's ServerCore + AspiredVersionsManager with the AvailabilityPreservingPolicy: a new version
is loaded (and warmed up) before an old one is unloaded, a version that fails to load never replaces a good one,
and a reload may only point a label at an AVAILABLE version (otherwise FAILED_PRECONDITION, old config kept).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.modelserver.config import ModelConfig, ModelServerConfig, aspired_versions, validate_model_server_config
from service.modelserver.errors import FailedPrecondition, InvalidArgument, NotFound, ServingError
from service.modelserver.servable import Servable
from tlserve.contract import list_versions

logger = logging.getLogger(__name__)

Loader = Callable[[str, int, Path], Servable]


class State(enum.IntEnum):
    """ModelVersionStatus.State values (apis/get_model_status.proto)."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class VersionStatus:
    state: State
    error: ServingError | None = None
    servable: Servable | None = None
    failed_attempts: int = 0
    failed_at: float = 0.0


@dataclass
class ModelEntry:
    config: ModelConfig
    versions: dict[int, VersionStatus] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def base_path(self) -> Path:
        return Path(self.config.base_path)

    def available(self) -> list[int]:
        return sorted(v for v, status in self.versions.items() if status.state is State.AVAILABLE)


def describe_request(name: str, version: int | None) -> str:
    """TF Serving's ServableRequest::DebugString."""
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


class ModelManager:
    """Thread-safe registry of model versions; `reconcile` does the (slow) loading outside the state lock."""

    def __init__(
        self,
        loader: Loader,
        *,
        allow_labels_for_unavailable: bool = False,
        max_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
    ) -> None:
        self._loader = loader
        self._max_load_retries = max_load_retries
        self._load_retry_interval_s = load_retry_interval_s
        self._allow_labels_for_unavailable = allow_labels_for_unavailable
        self._models: dict[str, ModelEntry] = {}
        self._config: ModelServerConfig | None = None
        self._state_lock = threading.RLock()
        self._transition_lock = threading.Lock()  # one config change or poll pass at a time

    # ---- configuration -------------------------------------------------------------------------------------

    @property
    def config(self) -> ModelServerConfig | None:
        return self._config

    def apply_config(self, config: ModelServerConfig, *, initial: bool = False) -> None:
        """Serve exactly this config (TF Serving's ReloadConfig); models left out are unloaded.

        The initial config may label versions that are not loaded yet (they load right after), like TF Serving
        with --allow_version_labels_for_unavailable_models; later reloads follow the strict rule unless that flag
        is set, and even then an existing label moves only to an AVAILABLE version.
        """
        validate_model_server_config(config)
        with self._transition_lock:
            self._check_labels(config, lenient=initial or self._allow_labels_for_unavailable)
            self._install(config)
            for name in list(self._models):
                self._reconcile(name)
            self._config = config

    def _check_labels(self, config: ModelServerConfig, *, lenient: bool) -> None:
        """A label may only point at an AVAILABLE version; `lenient` exempts new or unchanged labels (TF's flag)."""
        with self._state_lock:
            for model in config.model_config_list.config:
                entry = self._models.get(model.name)
                current = entry.labels if entry else {}
                for label, version in sorted(model.version_labels.items()):
                    if lenient and current.get(label, version) == version:
                        continue
                    status = entry.versions.get(version) if entry else None
                    if status is None or status.state is not State.AVAILABLE:
                        raise FailedPrecondition(
                            f"Request to assign label to version {version} of model {model.name}, "
                            "which is not currently available for inference"
                        )

    def _install(self, config: ModelServerConfig) -> None:
        wanted = {model.name: model for model in config.model_config_list.config}
        with self._state_lock:
            for name in [name for name in self._models if name not in wanted]:
                self._unload_all(name)
                del self._models[name]
                logger.info("removed model %s", name)
            for name, model in wanted.items():
                entry = self._models.get(name)
                if entry is None or entry.config.base_path != model.base_path:
                    if entry is not None:
                        self._unload_all(name)
                    entry = self._models[name] = ModelEntry(config=model)
                    logger.info("added model %s from %s", name, model.base_path)
                entry.config = model
                self._set_labels(entry, name, dict(model.version_labels))

    def _set_labels(self, entry: ModelEntry, name: str, labels: dict[str, int]) -> None:
        for label in sorted(set(entry.labels) | set(labels)):
            old, new = entry.labels.get(label), labels.get(label)
            if old != new:
                logger.info("label %s of model %s: %s -> %s", label, name, old, new)
        entry.labels = labels

    # ---- version transitions -------------------------------------------------------------------------------

    def poll(self) -> None:
        """One pass of the file-system poller: load new aspired versions, then retire the ones no longer aspired."""
        with self._transition_lock:
            for name in list(self._models):
                self._reconcile(name)

    def _reconcile(self, name: str) -> None:
        with self._state_lock:
            entry = self._models.get(name)
            if entry is None:
                return
            on_disk = list_versions(entry.base_path)
            aspired = aspired_versions(entry.config, on_disk)
            to_load = {v: entry.versions.get(v) for v in aspired if self._needs_load(entry.versions.get(v))}
            for version in to_load:
                entry.versions[version] = VersionStatus(State.LOADING)
        for version, previous in to_load.items():
            self._load(name, entry, version, previous.failed_attempts if previous else 0)
        with self._state_lock:
            self._retire(name, entry, aspired, on_disk)

    def _needs_load(self, status: VersionStatus | None) -> bool:
        """New, unloaded-but-aspired-again, or failed with retries left (TF Serving's --max_num_load_retries)."""
        if status is None or (status.state is State.END and status.error is None):
            return True
        return (
            status.state is State.END
            and 0 < status.failed_attempts <= self._max_load_retries
            and time.monotonic() - status.failed_at >= self._load_retry_interval_s
        )

    def _load(self, name: str, entry: ModelEntry, version: int, failed_attempts: int) -> None:
        logger.info("loading %s version %d%s", name, version, f" (retry {failed_attempts})" if failed_attempts else "")
        try:
            servable = self._loader(name, version, entry.base_path / str(version))
        except ServingError as exc:
            logger.error("loading %s version %d failed: %s", name, version, exc.message)
            with self._state_lock:
                entry.versions[version] = VersionStatus(
                    State.END, error=exc, failed_attempts=failed_attempts + 1, failed_at=time.monotonic()
                )
            return
        with self._state_lock:
            entry.versions[version] = VersionStatus(State.AVAILABLE, servable=servable)
        logger.info("%s version %d is AVAILABLE", name, version)

    def _retire(self, name: str, entry: ModelEntry, aspired: list[int], on_disk: list[int]) -> None:
        """Unload versions no longer aspired, but never the last good one while no aspired version is available."""
        aspired_available = any(
            entry.versions.get(v, VersionStatus(State.END)).state is State.AVAILABLE for v in aspired
        )
        for version in entry.available():
            if version in aspired:
                continue
            if aspired_available or version not in on_disk or not aspired:
                self._unload(name, entry, version)

    def _unload(self, name: str, entry: ModelEntry, version: int) -> None:
        entry.versions[version] = VersionStatus(State.END)
        logger.info("unloaded %s version %d", name, version)

    def _unload_all(self, name: str) -> None:
        entry = self._models[name]
        for version in entry.available():
            self._unload(name, entry, version)

    def unload_everything(self) -> None:
        with self._transition_lock, self._state_lock:
            for name in list(self._models):
                self._unload_all(name)

    # ---- request side --------------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        with self._state_lock:
            return sorted(self._models)

    def version_for_label(self, name: str, label: str) -> int:
        with self._state_lock:
            entry = self._models.get(name)
            if entry is None or label not in entry.labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            return entry.labels[label]

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a ModelSpec names: a version, a label's version, or the latest AVAILABLE one."""
        if not name:
            raise InvalidArgument("ModelSpec has no name specified.")
        if label:
            version = self.version_for_label(name, label)
        with self._state_lock:
            entry = self._models.get(name)
            if entry is not None:
                candidates = entry.available() if version is None else [version]
                for candidate in reversed(candidates):
                    status = entry.versions.get(candidate)
                    if status is not None and status.servable is not None and status.state is State.AVAILABLE:
                        return status.servable
        raise NotFound(f"Servable not found for request: {describe_request(name, version)}")

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[tuple[int, VersionStatus]]:
        """GetModelStatus: (version, status) pairs, newest first, with TF Serving's NOT_FOUND messages."""
        if label:
            version = self.version_for_label(name, label)
        with self._state_lock:
            entry = self._models.get(name)
            versions = dict(entry.versions) if entry else {}
        if version is not None:
            if version not in versions:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [(version, versions[version])]
        if not versions:
            raise NotFound(f"Could not find any versions of model {name}")
        return sorted(versions.items(), reverse=True)

    def snapshot(self) -> dict[str, Any]:
        """Model → {labels, versions: {version: state name}} for logs and tests."""
        with self._state_lock:
            return {
                name: {
                    "labels": dict(entry.labels),
                    "versions": {v: s.state.name for v, s in sorted(entry.versions.items())},
                }
                for name, entry in self._models.items()
            }
