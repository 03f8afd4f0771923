"""What `tlserve models list/show` report: versions on disk, their labels, metrics and creation time,
and (when a model server is given) the state it reports for each version."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tlserve.contract import METADATA_FILE, list_versions
from training import modelconfig
from training.modelservice import ServerError

logger = logging.getLogger(__name__)


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """metadata.json of a version, or {} when missing or unreadable (an old or foreign export)."""
    try:
        loaded = json.loads((version_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _server_states(server: str | None, name: str) -> dict[int, str] | None:
    if not server:
        return None
    from training.modelservice import ModelServer

    try:
        with ModelServer(server, rpc_timeout_s=3.0) as client:
            return client.version_states(name)
    except ServerError as exc:
        logger.warning("%s", exc)
        return None


def describe_model(models_dir: Path, name: str, *, server: str | None = None) -> dict[str, Any]:
    """One model as plain data (JSON-ready)."""
    model = modelconfig.load_model(models_dir, name)
    base = modelconfig.resolve_base_path(modelconfig.config_path(models_dir), model.base_path)
    states = _server_states(server, name)
    served = set(model.versions) or set(list_versions(base)[-1:])
    versions = []
    for version in list_versions(base):
        metadata = read_metadata(base / str(version))
        if states is not None:
            state = states.get(version, "not loaded")
        else:
            state = "configured" if version in served else "on disk"
        versions.append(
            {
                "version": version,
                "labels": sorted(label for label, target in model.labels.items() if target == version),
                "metrics": metadata.get("metrics", {}),
                "created_at": metadata.get("created_at"),
                "state": state,
            }
        )
    return {
        "name": name,
        "base_path": model.base_path,
        "served": sorted(model.versions),
        "labels": dict(model.labels),
        "versions": versions,
    }


def describe_repository(models_dir: Path, *, server: str | None = None) -> list[dict[str, Any]]:
    config = modelconfig.read_repository_config(models_dir)
    return [describe_model(models_dir, name, server=server) for name in modelconfig.model_names(config)]
