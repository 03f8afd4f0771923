"""Read and atomically rewrite `models/models.config`, the text ModelServerConfig both servers load.

Relative `base_path`s are resolved against the directory holding the config file (the embedded model
server's convention), so a models/ folder can move or be mounted at /models without edits.
New entries are written relative (`base_path: "NAME"`); existing entries keep whatever path they have.

Shared by training (publishing a version decides whether it goes live: training/live.py), promotion (label
moves) and the gateway (which models are served); every writer holds `config_lock` around read-modify-write.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlserve.atomic import replace_atomically
from tlserve.console import CommandError
from tlserve.contract import LABEL_PATTERN, MODELS_CONFIG_FILE, list_versions, unconfigured_model_folders

logger = logging.getLogger(__name__)

STABLE = "stable"
CANARY = "canary"
_LOCK_FILE = ".promote.lock"


@contextlib.contextmanager
def config_lock(models_dir: Path) -> Iterator[None]:
    """One models.config change at a time per repository (a second promote or publish waits, it does not
    interleave configs). The repository must exist: a mistyped --models-dir is an error, not a new repository."""
    if not models_dir.is_dir():
        raise CommandError(f"model repository not found: {models_dir}")
    with open(models_dir / _LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ModelsConfigError(CommandError):
    """models.config is missing a model, unreadable, or would become invalid (exit code 2, one line)."""


@dataclass(frozen=True)
class ServedModel:
    """One `config { ... }` entry, reduced to what promotion changes: served versions and labels.

    `versions` empty means the entry serves TF Serving's default (`latest { num_versions: 1 }`).
    """

    name: str
    base_path: str
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)

    def with_versions(self, versions: Iterable[int]) -> ServedModel:
        return ServedModel(self.name, self.base_path, tuple(sorted(set(versions))), dict(self.labels))

    def with_label(self, label: str, version: int) -> ServedModel:
        return ServedModel(self.name, self.base_path, self.versions, {**self.labels, label: version})

    def without_label(self, label: str) -> ServedModel:
        labels = {key: value for key, value in self.labels.items() if key != label}
        return ServedModel(self.name, self.base_path, self.versions, labels)

    def with_label_moved(self, label: str, version: int) -> ServedModel:
        """`label` → `version`; a canary that becomes stable loses its canary label (it is no longer a trial)."""
        moved = self.with_label(label, version)
        if label == STABLE and moved.labels.get(CANARY) == version:
            moved = moved.without_label(CANARY)
        return moved

    def serving_labelled(self) -> ServedModel:
        """Serve exactly the labelled versions (the newest one stays when nothing is labelled)."""
        return self.with_versions(set(self.labels.values()) or set(self.versions[-1:]))


def config_path(models_dir: Path) -> Path:
    return models_dir / MODELS_CONFIG_FILE


def resolve_base_path(config_file: Path, base_path: str) -> Path:
    """Where a model's versions live on this machine: absolute paths as-is, relative ones beside the config."""
    path = Path(base_path)
    return path if path.is_absolute() else config_file.parent / path


def read_config(config_file: Path) -> Any:
    """The parsed ModelServerConfig; an empty one when the file does not exist yet."""
    from google.protobuf import text_format

    from tlserve.protocol import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if not config_file.exists():
        return config
    try:
        text_format.Parse(config_file.read_text(encoding="utf-8"), config)
    except text_format.ParseError as exc:
        raise ModelsConfigError(f"{config_file} is not a valid ModelServerConfig: {exc}") from exc
    return config


def render_config(config: Any) -> str:
    from google.protobuf import text_format

    text: str = text_format.MessageToString(config)
    return text


def write_config(config_file: Path, config: Any) -> None:
    """Replace the config in one rename: a crash or a concurrent reader sees the old file or the new one."""
    text = render_config(config)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{config_file.name}."
    replace_atomically(
        config_file, lambda stream: stream.write(text.encode()), prefix=prefix, suffix=".tmp", sync_folder=True
    )
    logger.debug("wrote %s", config_file)


def model_names(config: Any) -> list[str]:
    return [entry.name for entry in config.model_config_list.config]


def get_model(config: Any, name: str) -> ServedModel | None:
    """The entry for `name`, or None when the config does not list it."""
    for entry in config.model_config_list.config:
        if entry.name == name:
            policy = entry.model_version_policy
            versions = tuple(sorted(policy.specific.versions)) if policy.HasField("specific") else ()
            return ServedModel(entry.name, entry.base_path, versions, dict(entry.version_labels))
    return None


def put_model(config: Any, model: ServedModel) -> Any:
    """A copy of `config` with `model`'s entry replaced (or appended); other entries are untouched."""
    check_model(model)
    updated = type(config)()
    updated.CopyFrom(config)
    entries = updated.model_config_list.config
    entry = next((item for item in entries if item.name == model.name), None)
    if entry is None:
        entry = entries.add(name=model.name, model_platform="tensorflow")
    entry.base_path = model.base_path
    entry.model_version_policy.Clear()
    if model.versions:
        entry.model_version_policy.specific.versions.extend(model.versions)
    else:
        entry.model_version_policy.latest.num_versions = 1
    entry.version_labels.clear()
    for label, version in sorted(model.labels.items()):
        entry.version_labels[label] = version
    return updated


def check_model(model: ServedModel) -> None:
    """Refuse entries TF Serving would reject: bad label names, labels on versions the entry does not serve."""
    for label, version in model.labels.items():
        if not LABEL_PATTERN.match(label):
            raise ModelsConfigError(f"label {label!r} must match {LABEL_PATTERN.pattern}")
        if model.versions and version not in model.versions:
            raise ModelsConfigError(f"label {label!r} points at version {version}, which {model.name} does not serve")


def read_repository_config(models_dir: Path) -> Any:
    """models.config of a repository; without one, what the model servers serve then: every model, latest only."""
    config_file = config_path(models_dir)
    if config_file.exists():
        return read_config(config_file)
    config = read_config(config_file)
    for folder in unconfigured_model_folders(models_dir):
        config = put_model(config, ServedModel(name=folder.name, base_path=folder.name))
    return config


def load_model(models_dir: Path, name: str) -> ServedModel:
    """The config entry for `name`, or a fresh relative-path entry when the model has versions but no entry."""
    model = get_model(read_repository_config(models_dir), name)
    if model is not None:
        return model
    if not list_versions(models_dir / name):
        missing = f"no model {name!r} under {models_dir} (no versions and no entry in {MODELS_CONFIG_FILE})"
        raise ModelsConfigError(missing)
    return ServedModel(name=name, base_path=name)


def save_model(models_dir: Path, model: ServedModel) -> Any:
    """Rewrite models.config with `model`'s entry changed (every other model stays); returns the new config."""
    config = put_model(read_repository_config(models_dir), model)
    write_config(config_path(models_dir), config)
    return config


def version_path(models_dir: Path, model: ServedModel, version: int) -> Path:
    return resolve_base_path(config_path(models_dir), model.base_path) / str(version)


def absolute_config(config: Any, root_dir: Path) -> Any:
    """A copy with relative base paths made absolute against `root_dir` (what a server elsewhere can resolve)."""
    resolved = type(config)()
    resolved.CopyFrom(config)
    for entry in resolved.model_config_list.config:
        if entry.base_path and "://" not in entry.base_path and not Path(entry.base_path).is_absolute():
            entry.base_path = str(root_dir / entry.base_path)
    return resolved
