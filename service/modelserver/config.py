"""What the model server serves: TF Serving's `ModelServerConfig` text proto, built from a file, flags or a folder.

`base_path` in a config file may be absolute (TF Serving's own rule; production uses `/models/<name>`) or
relative, in which case it is resolved against the directory holding the config file, so a `models.config`
inside `models/` can simply say `base_path: "demo"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.modelserver.errors import InvalidArgument
from tlserve.contract import LABEL_PATTERN, MODELS_CONFIG_FILE, unconfigured_model_folders

ModelServerConfig = Any  # tensorflow_serving.config.model_server_config_pb2.ModelServerConfig
ModelConfig = Any  # tensorflow_serving.config.model_server_config_pb2.ModelConfig


def _config_module() -> Any:
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2


def parse_model_server_config(text: str, *, root_dir: Path | None = None) -> ModelServerConfig:
    """Parse a text-format ModelServerConfig; relative base paths are resolved against `root_dir`."""
    from google.protobuf import text_format

    config = _config_module().ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"cannot parse model config: {exc}") from exc
    if root_dir is not None:
        resolve_base_paths(config, root_dir)
    validate_model_server_config(config)
    return config


def read_model_server_config(path: Path) -> ModelServerConfig:
    """Read a `--model-config-file` (text proto); relative base paths are relative to the file's directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read model config file {path}: {exc.strerror}") from exc
    return parse_model_server_config(text, root_dir=path.parent.resolve())


def resolve_base_paths(config: ModelServerConfig, root_dir: Path) -> None:
    for model in config.model_config_list.config:
        if model.base_path and not Path(model.base_path).is_absolute():
            model.base_path = str(root_dir / model.base_path)


def single_model_config(name: str, base_path: Path) -> ModelServerConfig:
    """`--model-name/--model-base-path`: one model, latest version only (TF Serving's default policy)."""
    config = _config_module().ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = str(base_path.resolve())
    model.model_platform = "tensorflow"
    validate_model_server_config(config)
    return config


def models_dir_config(models_dir: Path) -> ModelServerConfig:
    """`--models-dir`: its `models.config` if present, else the folders `unconfigured_model_folders` names (latest)."""
    config_file = models_dir / MODELS_CONFIG_FILE
    if config_file.is_file():
        return read_model_server_config(config_file)
    config = _config_module().ModelServerConfig()
    for folder in unconfigured_model_folders(models_dir):
        model = config.model_config_list.config.add()
        model.name = folder.name
        model.base_path = str(folder.resolve())
        model.model_platform = "tensorflow"
    validate_model_server_config(config)
    return config


def validate_model_server_config(config: ModelServerConfig) -> None:
    """The checks TF Serving's ServerCore makes before it accepts a config (same messages)."""
    if config.WhichOneof("config") == "custom_model_config":
        raise InvalidArgument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in seen:
            raise InvalidArgument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        _validate_model_config(model)


def _validate_model_config(model: ModelConfig) -> None:
    if not model.name:
        raise InvalidArgument("model config entry has no name")
    if not model.base_path:
        raise InvalidArgument(f"model {model.name} has no base_path")
    if model.model_platform not in ("", "tensorflow"):
        raise InvalidArgument(f"Model {model.name} requests unsupported platform {model.model_platform}")
    for label in model.version_labels:
        if not LABEL_PATTERN.match(label):
            raise InvalidArgument(f"Invalid version label {label!r} of model {model.name}: must match [a-zA-Z0-9_]+")


def aspired_versions(model: ModelConfig, on_disk: list[int]) -> list[int]:
    """The versions a model's `model_version_policy` wants served, from those present on disk (ascending)."""
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return list(on_disk)
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [version for version in on_disk if version in wanted]
    num_versions = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return list(on_disk[-num_versions:])
