"""Which models the upstream is configured to serve, and the default model of a request that names none.

The gateway cannot list an upstream's models over gRPC (TF Serving has no such call), so the names come from,
in order: `served_models` (given by the operator, e.g. for TF Serving), the model repository `repository`
(`tlserve serve` sets it for the embedded server: its models.config, else every model folder with a version —
parsed again only when models.config changes, so a newly trained model counts at once), and
last `default_model` alone. Default model: `default_model` if set, else the only served model; with several,
a request without a model is a 400 naming them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from service.gateway.errors import BadRequest
from service.gateway.settings import Settings
from tlserve import models_config
from tlserve.contract import MODELS_CONFIG_FILE, unconfigured_model_folders

UNKNOWN_MODELS = (
    "the gateway does not know which models the upstream serves: set --default-model (TLSERVE_DEFAULT_MODEL) "
    "or --served-models (TLSERVE_SERVED_MODELS)"
)


def repository_models(models_dir: Path) -> tuple[str, ...]:
    """The models the model server loads from `models_dir`: models.config's entries, else model folders."""
    config = models_dir / MODELS_CONFIG_FILE
    try:
        stat = config.stat()
    except FileNotFoundError:
        return tuple(folder.name for folder in unconfigured_model_folders(models_dir))
    # Asked on every request without a model: parse the file again only when it has changed.
    return _configured_models(config, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _configured_models(config_file: Path, mtime_ns: int, size: int) -> tuple[str, ...]:
    """The model names of a models.config; the stat values are the cache key (a rewrite is a rename: new ones)."""
    try:
        config = models_config.read_config(config_file)
    except (models_config.ModelsConfigError, OSError, UnicodeDecodeError):
        return ()  # the model server refuses it too: nothing is served from it
    return tuple(dict.fromkeys(models_config.model_names(config)))


def served_models(settings: Settings) -> tuple[str, ...] | None:
    """The names the upstream is configured to serve; None when the gateway has no way to know."""
    if settings.served_models:
        return settings.served_models
    if settings.repository is not None:
        return repository_models(settings.repository)
    if settings.default_model:
        return (settings.default_model,)
    return None


def default_model(settings: Settings) -> str:
    """The model of a request that names none (see the module docstring); BadRequest when there is no single one."""
    if settings.default_model:
        return settings.default_model
    names = served_models(settings)
    if names is None:
        raise BadRequest(f"name a model with model=; {UNKNOWN_MODELS}")
    if len(names) == 1:
        return names[0]
    if not names:
        raise BadRequest("no model is served yet (train one with `tlserve train DATA --name NAME`)")
    raise BadRequest(f"several models are served ({', '.join(names)}); name one with model=")
