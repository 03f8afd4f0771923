"""What `tlserve evaluate` checks before it scores: images the version trained on, and reports it would overwrite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlserve import contract


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """The version's metadata.json ({} for a foreign export)."""
    try:
        metadata = json.loads((version_dir / contract.METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def trained_on(version_dir: Path, data_dir: Path) -> dict[str, Any] | None:
    """The version's hyper-parameters when `data_dir` is the folder it was trained on, else None.

    The folder is the metadata's `data_dir` (where the run read its images: provenance, not a hyper-parameter);
    versions published before it existed recorded it as `config.data`.
    """
    metadata = read_metadata(version_dir)
    config = metadata.get("config")
    config = config if isinstance(config, dict) else {}
    data = metadata.get("data_dir") or config.get("data")
    if not data or Path(data).resolve() != data_dir.resolve():
        return None
    return config


def overlap_warning(version_dir: Path, data_dir: Path, seen: int, total: int) -> str:
    """One line saying the scores include images the version was fitted or selected on."""
    return (
        f"warning: {seen} of {total} images in {data_dir} are in the train/val split {version_dir} was trained on; "
        "these scores overstate accuracy (its held-out score is the test split's, in its metadata.json)"
    )


def fresh_report_dir(wanted: Path) -> Path:
    """`wanted` if it does not exist yet, else `wanted-2`, `wanted-3`, …: an earlier report is never overwritten."""
    candidate, number = wanted, 1
    while candidate.exists():
        number += 1
        candidate = wanted.with_name(f"{wanted.name}-{number}")
    return candidate
