"""What `tlserve models list/show` report: versions on disk, their labels, metrics and creation time,
and (when model servers are given) the state they report for each version, merged over the replicas."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promotion.client import ServerError
from tlserve import models_config
from tlserve.contract import METADATA_FILE, list_versions

logger = logging.getLogger(__name__)


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """metadata.json of a version, or {} when missing or unreadable (an old or foreign export)."""
    try:
        loaded = json.loads((version_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _replica_states(servers: Sequence[str], name: str) -> dict[str, dict[int, str]] | None:
    """{replica: {version: state}}, or None without servers or when one cannot be asked (logged, naming it)."""
    if not servers:
        return None
    from promotion.replicas import connect

    try:
        with connect(servers, rpc_timeout_s=3.0) as client:
            return {replica.target: replica.version_states(name) for replica in client.replicas}
    except ServerError as exc:
        logger.warning("%s", exc)
        return None


def describe_model(models_dir: Path, name: str, *, servers: Sequence[str] = ()) -> dict[str, Any]:
    """One model as plain data (JSON-ready); with several servers, each version also lists `replica_states`."""
    from promotion.replicas import merge_states
    from training.live import live_version

    model = models_config.load_model(models_dir, name)
    base = models_config.resolve_base_path(models_config.config_path(models_dir), model.base_path)
    per_replica = _replica_states(servers, name)
    states = None if per_replica is None else merge_states(list(per_replica.values()))
    served = set(model.versions) or set(list_versions(base)[-1:])
    on_disk = list_versions(base)
    live = live_version(model, on_disk)
    versions = []
    for version in on_disk:
        metadata = read_metadata(base / str(version))
        if states is not None:
            state = states.get(version, "not loaded")
        else:
            state = "configured" if version in served else "on disk"
        row = {
            "version": version,
            "labels": sorted(label for label, target in model.labels.items() if target == version),
            "metrics": metadata.get("metrics", {}),
            "created_at": metadata.get("created_at"),
            "state": state,
            "live": version == live,
        }
        if per_replica is not None and len(per_replica) > 1:
            row["replica_states"] = {target: found.get(version, "not loaded") for target, found in per_replica.items()}
        versions.append(row)
    return {
        "name": name,
        "base_path": model.base_path,
        "served": sorted(model.versions),
        "labels": dict(model.labels),
        "live": live,
        "versions": versions,
    }


def describe_repository(models_dir: Path, *, servers: Sequence[str] = ()) -> list[dict[str, Any]]:
    config = models_config.read_repository_config(models_dir)
    return [describe_model(models_dir, name, servers=servers) for name in models_config.model_names(config)]
