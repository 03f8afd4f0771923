"""Published is not live: which version takes a model's unpinned traffic, and how publishing keeps it there.

The first version of a model becomes `stable` when published. Every later version is published as a candidate:
the entry's `specific` version policy does not list it and no label points at it, so neither the model server
(which does not load it) nor the gateway's "newest version" fallback can send unpinned traffic to it until a
promote moves `stable` (`tlserve promote`, `tlserve train --promote`, `tlserve retrain --promote-if-better`).

Publishing only rewrites models.config (under the same lock as a promote) and records the label it set in the
audit log as a `publish`; moving `stable` on a running server is promotion's two-step move (promotion/promote.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tlserve import audit
from tlserve.contract import list_versions
from tlserve.models_config import (
    STABLE,
    ServedModel,
    config_lock,
    config_path,
    get_model,
    load_model,
    read_repository_config,
    resolve_base_path,
    save_model,
)

logger = logging.getLogger(__name__)

PUBLISH_ACTION = "publish"  # audit action of a label set by publishing (not a promote: rollback does not pop it)


def live_version(model: ServedModel, on_disk: list[int]) -> int | None:
    """The version unpinned requests reach: `stable`, else the newest one the entry serves."""
    if STABLE in model.labels:
        return model.labels[STABLE]
    served = [version for version in on_disk if not model.versions or version in model.versions]
    return served[-1] if served else None


def stable_version(models_dir: Path, name: str) -> int | None:
    """The version `stable` points at (None: no label, e.g. a model published before labels existed)."""
    model = get_model(read_repository_config(models_dir), name)
    return None if model is None else model.labels.get(STABLE)


def pin_live_version(models_dir: Path, name: str) -> int | None:
    """Before a new version appears: label the version served now `stable` if nothing is (returns it, or None).

    A model published before labels existed is served under TF Serving's `latest` policy, which would load the
    new version and drop the old one on the next file-system poll; pinning first keeps traffic where it is.
    """
    with config_lock(models_dir):
        model = get_model(read_repository_config(models_dir), name)
        if model is None or STABLE in model.labels:
            return None
        served = live_version(model, list_versions(resolve_base_path(config_path(models_dir), model.base_path)))
        if served is None:
            return None
        _label_stable(models_dir, model, served, reason="pin the served version")
    logger.info("%s: pinned the served version %s as %s before publishing", name, served, STABLE)
    return served


def label_if_first(models_dir: Path, name: str, version: int) -> bool:
    """After publishing `version`: make it `stable` when the model has no stable version yet; True if it did.

    Only models.config is rewritten (a running TF Serving picks it up with --model_config_file_poll_wait_seconds
    and --allow_version_labels_for_unavailable_models, as `deploy/` runs it; a model server started afterwards
    reads it at start-up, when a label may point at a version that is still loading).
    """
    with config_lock(models_dir):
        model = load_model(models_dir, name)
        if STABLE in model.labels:
            return False
        _label_stable(models_dir, model, version, reason="first version")
    return True


def _label_stable(models_dir: Path, model: ServedModel, version: int, *, reason: str) -> None:
    """`stable` → `version`, serving exactly the labelled versions (as an offline promote writes it); the caller
    holds the config lock."""
    save_model(models_dir, model.with_label_moved(STABLE, version).serving_labelled())
    record = audit.AuditRecord(PUBLISH_ACTION, model.name, STABLE, model.labels.get(STABLE), version, reason=reason)
    audit.append_record(models_dir, record)
