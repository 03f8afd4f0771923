"""Retention: delete old versions from disk, never one that is labelled, served or a rollback target."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tlserve import audit
from tlserve.contract import list_versions
from tlserve.models_config import STABLE, config_lock, load_model, version_path


def prune_versions(models_dir: Path, name: str, *, keep: int) -> list[int]:
    """Delete old versions from disk, keeping the newest `keep`, every labelled or served version, and the
    version a rollback would return to. Returns the deleted versions."""
    with config_lock(models_dir):
        model = load_model(models_dir, name)
        base = version_path(models_dir, model, 0).parent
        on_disk = list_versions(base)
        protected = set(on_disk[-keep:] if keep > 0 else []) | set(model.labels.values()) | set(model.versions)
        if not model.versions:
            protected |= set(on_disk[-1:])  # the default policy serves the latest
        protected |= set(audit.label_stack(models_dir, name, STABLE)[-2:])
        doomed = [version for version in on_disk if version not in protected]
        for version in doomed:
            # Rename first: the version vanishes atomically for pollers, then the files go.
            hidden = base / f".deleted-{version}-{time.time_ns()}"
            (base / str(version)).rename(hidden)
            shutil.rmtree(hidden, ignore_errors=True)
        if doomed:
            audit.append_record(
                models_dir, audit.AuditRecord("prune", name, "", None, None, reason=f"deleted versions {doomed}")
            )
        return doomed
