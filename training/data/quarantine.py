"""Move unusable files out of a dataset (never delete them), keeping their paths relative to the dataset root."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from training.data.layout import DatasetError
from training.data.scan import BadFile

logger = logging.getLogger(__name__)


def _free_target(target: Path) -> Path:
    """`target`, or `target.1`, `target.2`, ... when an earlier quarantine already holds that name."""
    candidate, number = target, 0
    while candidate.exists():
        number += 1
        candidate = target.with_name(f"{target.name}.{number}")
    return candidate


def check_quarantine_dir(root: Path, quarantine: Path) -> None:
    """Refuse a quarantine folder the next scan would read as a class (inside the dataset and not hidden)."""
    root, quarantine = root.resolve(), quarantine.resolve()
    if quarantine == root or root in quarantine.parents:
        inside = quarantine.relative_to(root).parts
        if not inside or not inside[0].startswith("."):
            raise DatasetError(f"quarantine folder {quarantine} lies inside the dataset; use a folder outside it")


def quarantine_files(root: Path, bad: Iterable[BadFile], quarantine: Path) -> list[tuple[str, Path]]:
    """Move each bad file to quarantine/<rel_path>; returns (rel_path, where it went) per moved file."""
    check_quarantine_dir(root, quarantine)
    moved = []
    for item in bad:
        source = root / item.rel_path
        if not source.exists():
            continue
        target = _free_target(quarantine / item.rel_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        logger.info("quarantined %s (%s) → %s", item.rel_path, item.reason, target)
        moved.append((item.rel_path, target))
    return moved
