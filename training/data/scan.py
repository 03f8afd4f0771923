"""Scan a dataset folder into labelled, split image records plus a report of every bad or odd file.

    scan = scan_dataset(Path("data/pets"))        # thread pool, tqdm progress bar on stderr
    scan.classes                                  # ["cat", "dog"]: label = index
    scan.split("train")                           # [ImageRecord, ...] usable files only
    scan.bad, scan.odd, scan.ignored              # skipped (with reasons), converted (with reasons), non-images
    scan.fingerprint                              # changes whenever any file, label or split changes

Unusable files (0-byte, truncated, not an image, absurd dimensions, copies leaking across given splits)
appear only in `bad`; usable-but-odd ones are in `records` (with `needs_conversion` when PIL must convert
them) and in `odd`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from training.data.checks import DEFAULT_MAX_PIXELS, Verdict, inspect_image
from training.data.layout import DatasetError, FoundFile, Layout, find_images
from training.data.split import SPLITS, assign_splits, check_fractions, resolve_given_splits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One usable image. `label` indexes DatasetScan.classes; `split` is "train", "val" or "test"."""

    path: Path
    rel_path: str
    label: int
    split: str
    sha256: str
    needs_conversion: bool = False  # TensorFlow cannot decode it; the pipeline feeds PIL-made PNG bytes instead


@dataclass(frozen=True)
class BadFile:
    """A skipped file and why: "0-byte", "truncated JPEG", "not an image", "absurd dimensions (...)", ..."""

    rel_path: str
    reason: str


@dataclass(frozen=True)
class DatasetScan:
    """Everything known about a dataset folder after one scan."""

    root: Path
    classes: list[str]
    records: list[ImageRecord]
    bad: list[BadFile]
    odd: list[tuple[str, str]]  # (rel_path, what is odd) for usable files converted to RGB on the fly
    ignored: int  # hidden files and files without an image extension
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (rel_path, first path with the same bytes)
    given_splits: bool = False  # True when train/val/test folders fixed the split

    def split(self, name: str) -> list[ImageRecord]:
        """The usable records of one split, in path order."""
        return [record for record in self.records if record.split == name]

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Class name → number of usable images (in `split`, or in all splits); every class is listed."""
        counter = Counter(record.label for record in self.records if split is None or record.split == split)
        return {name: counter.get(label, 0) for label, name in enumerate(self.classes)}

    def bad_reasons(self) -> dict[str, int]:
        """Reason → number of skipped files (e.g. for "skipped 12 files: 10 truncated JPEG, 2 0-byte")."""
        return dict(Counter(bad.reason.split(" (")[0] for bad in self.bad).most_common())

    @property
    def fingerprint(self) -> str:
        """SHA-256 over (path, label, split, content) of every usable record: the identity of the training data."""
        digest = hashlib.sha256()
        for record in sorted(self.records, key=lambda record: record.rel_path):
            digest.update(f"{record.rel_path}\0{record.label}\0{record.split}\0{record.sha256}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class _Checked:
    found: FoundFile
    sha256: str
    verdict: Verdict


def _check_file(found: FoundFile, max_pixels: int) -> _Checked:
    try:
        data = found.path.read_bytes()
    except OSError as exc:
        return _Checked(found, "", Verdict(problem=f"unreadable ({exc.strerror or exc})"))
    verdict = inspect_image(data, found.path.suffix, max_pixels)
    return _Checked(found, hashlib.sha256(data).hexdigest(), verdict)


def _check_all(files: list[FoundFile], max_pixels: int, progress: bool) -> list[_Checked]:
    import tensorflow  # noqa: F401  (imported once here, not racing inside the worker threads)

    workers = min(8, 2 * (os.cpu_count() or 1))
    # disable=None: tqdm stays quiet when stderr is not a terminal (no carriage-return frames in log files).
    bar = tqdm(
        total=len(files), desc="scanning images", unit="file", file=sys.stderr, disable=None if progress else True
    )
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool, bar:
        # Large-but-allowed dimensions make PIL warn; as an error, checks.read_header reports them per file.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        checked = []
        for result in pool.map(lambda found: _check_file(found, max_pixels), files):
            checked.append(result)
            bar.update()
    return checked


@dataclass(frozen=True)
class _Assignment:
    splits: dict[str, str]
    duplicates: dict[str, str]
    leaked: dict[str, str]


def _assign(layout: Layout, usable: list[_Checked], val_fraction: float, test_fraction: float) -> _Assignment:
    pairs = [(item.found.rel_path, item.sha256) for item in usable]
    if not layout.has_given_splits:
        splits, duplicates = assign_splits(pairs, val_fraction, test_fraction)
        return _Assignment(splits, duplicates, {})
    given = {item.found.rel_path: item.found.given_split or "train" for item in usable}
    duplicates, leaked = resolve_given_splits(pairs, given)
    return _Assignment(given, duplicates, leaked)


def _build(root: Path, layout: Layout, checked: list[_Checked], assignment: _Assignment) -> DatasetScan:
    labels = {name: index for index, name in enumerate(layout.classes)}
    records, bad, odd = [], [], []
    for item in checked:
        rel_path = item.found.rel_path
        if item.verdict.problem is not None:
            bad.append(BadFile(rel_path, item.verdict.problem))
            continue
        if rel_path in assignment.leaked:
            bad.append(BadFile(rel_path, f"duplicate across splits (same bytes as {assignment.leaked[rel_path]})"))
            continue
        if item.verdict.oddities:
            odd.append((rel_path, ", ".join(item.verdict.oddities)))
        split = assignment.splits[rel_path]
        label = labels[item.found.class_name]
        records.append(ImageRecord(item.found.path, rel_path, label, split, item.sha256, item.verdict.needs_conversion))
    duplicates = sorted(assignment.duplicates.items())
    return DatasetScan(root, layout.classes, records, bad, odd, layout.ignored, duplicates, layout.has_given_splits)


def scan_dataset(
    root: Path,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DatasetScan:
    """Check every image under `root` and split the usable ones; raises DatasetError for an unusable folder.

    The fractions are ignored when the visible folders of `root` are train/ plus val/ (or validation/)
    and/or test/: those splits are used as given.
    """
    try:
        check_fractions(val_fraction, test_fraction)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    layout = find_images(Path(root))
    checked = _check_all(layout.files, max_pixels, progress)
    usable = [item for item in checked if item.verdict.usable]
    scan = _build(Path(root), layout, checked, _assign(layout, usable, val_fraction, test_fraction))
    logger.info(
        "%s: %d usable images in %d classes, %d skipped, %d odd, %d ignored",
        root,
        len(scan.records),
        len(scan.classes),
        len(scan.bad),
        len(scan.odd),
        scan.ignored,
    )
    return scan


__all__ = ["SPLITS", "BadFile", "DatasetError", "DatasetScan", "ImageRecord", "scan_dataset"]
