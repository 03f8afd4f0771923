"""Render a DatasetScan for people (aligned tables) and for programs (JSON-ready dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.data.scan import DatasetScan
from training.data.split import SPLITS


def report_dict(scan: DatasetScan, quarantined: list[tuple[str, Path]] | None = None) -> dict[str, Any]:
    """The `data check --json` document."""
    return {
        "root": str(scan.root),
        "classes": scan.classes,
        "split_source": "folders" if scan.given_splits else "path hash",
        "counts": {split: scan.counts(split) for split in SPLITS},
        "usable": len(scan.records),
        "bad": [{"path": item.rel_path, "reason": item.reason} for item in scan.bad],
        "odd": [{"path": rel_path, "reason": reason} for rel_path, reason in scan.odd],
        "duplicates": [{"path": rel_path, "same_as": anchor} for rel_path, anchor in scan.duplicates],
        "ignored": scan.ignored,
        "fingerprint": scan.fingerprint,
        "quarantined": [{"path": rel_path, "to": str(target)} for rel_path, target in quarantined or []],
    }


def _table(rows: list[list[str]], *, numbers: bool = False) -> list[str]:
    """Aligned columns; with `numbers`, every column after the first is right-aligned."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if numbers and index > 0 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _count_table(scan: DatasetScan) -> list[str]:
    per_split = {split: scan.counts(split) for split in SPLITS}
    rows = [["class", *SPLITS, "total"]]
    for name in [*scan.classes, "total"]:
        cells = [sum(counts.values()) if name == "total" else counts[name] for counts in per_split.values()]
        rows.append([name, *(str(cell) for cell in cells), str(sum(cells))])
    return _table(rows, numbers=True)


def _listing(title: str, items: list[tuple[str, str]]) -> list[str]:
    if not items:
        return []
    return ["", f"{title} ({len(items)}):", *("  " + line for line in _table([list(item) for item in items]))]


def _describe_duplicates(scan: DatasetScan) -> list[tuple[str, str]]:
    labels = {record.rel_path: record.label for record in scan.records}
    described = []
    for rel_path, anchor in scan.duplicates:
        conflict = labels.get(rel_path) != labels.get(anchor)
        described.append((rel_path, f"same bytes as {anchor}" + (" (in another class!)" if conflict else "")))
    return described


def format_report(scan: DatasetScan, quarantined: list[tuple[str, Path]] | None = None) -> str:
    """The human `data check` output: counts per class and split, then every skipped, odd and duplicate file."""
    source = "train/val/test folders" if scan.given_splits else "hash of each relative path"
    lines = [
        f"{scan.root}: {len(scan.classes)} classes, {len(scan.records)} usable images "
        f"(split by {source}), {len(scan.bad)} skipped, {len(scan.odd)} odd, {scan.ignored} ignored",
        "",
        *_count_table(scan),
    ]
    lines += _listing("skipped, unusable", [(item.rel_path, item.reason) for item in scan.bad])
    lines += _listing("odd, converted to RGB on the fly", scan.odd)
    lines += _listing("duplicates, kept in the split of the file they copy", _describe_duplicates(scan))
    lines += _listing("quarantined", [(rel_path, str(target)) for rel_path, target in quarantined or []])
    return "\n".join(lines)
