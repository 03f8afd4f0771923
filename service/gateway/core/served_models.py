"""Which models the upstream is configured to serve, and the default model of a request that names none.

The gateway cannot list an upstream's models over gRPC (TF Serving has no such call), so the names come from,
in order: `served_models` (given by the operator, e.g. for TF Serving), the model repository `repository`
(`tlserve serve` sets it for the embedded server: its models.config, else every model folder with a version —
exactly what the embedded server loads, re-read on every call so a newly trained model counts at once), and
last `default_model` alone. Default model: `default_model` if set, else the only served model; with several,
a request without a model is a 400 naming them.
"""

from __future__ import annotations

import re
from pathlib import Path

from service.gateway.errors import BadRequest
from service.gateway.settings import Settings
from tlserve.contract import MODELS_CONFIG_FILE, list_versions

# In a ModelServerConfig text proto, `name: "..."` is only a field of ModelConfig (labels use key/value), so a
# regular expression over the comment-stripped text finds the served names without TensorFlow's protos.
_NAME_FIELD = re.compile(r"""\bname\s*:\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
_COMMENT = re.compile(r"#[^\n]*")

UNKNOWN_MODELS = (
    "the gateway does not know which models the upstream serves: set --default-model (TLSERVE_DEFAULT_MODEL) "
    "or --served-models (TLSERVE_SERVED_MODELS)"
)


def repository_models(models_dir: Path) -> tuple[str, ...]:
    """The models the model server loads from `models_dir`: models.config's entries, else model folders."""
    config = models_dir / MODELS_CONFIG_FILE
    if config.is_file():
        text = _COMMENT.sub("", config.read_text(encoding="utf-8"))
        return tuple(dict.fromkeys(double or single for double, single in _NAME_FIELD.findall(text)))
    if not models_dir.is_dir():
        return ()
    return tuple(
        sorted(child.name for child in models_dir.iterdir() if not child.name.startswith(".") and list_versions(child))
    )


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
