"""Find a dataset's classes and image files on disk: folder-per-class, or train/val/test folders of those.

Hidden files and folders and files without an image extension are skipped and counted, never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val", "test")
# Folder names accepted for a split given on disk; `validation/` is what Keras' own examples use.
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


class DatasetError(ValueError):
    """The folder is not a dataset tlserve can use (missing, no class folders, bad fractions)."""


@dataclass(frozen=True)
class FoundFile:
    """One candidate image: where it is, its class, and its split when the folder layout fixes one."""

    path: Path
    rel_path: str
    class_name: str
    given_split: str | None


@dataclass(frozen=True)
class Layout:
    """What a walk of the dataset folder found, before any file is opened."""

    classes: list[str]
    files: list[FoundFile]
    ignored: int
    has_given_splits: bool


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def _is_split_layout(root: Path) -> bool:
    names = {child.name for child in _visible_dirs(root)}
    return "train" in names and names <= set(SPLIT_FOLDERS)


def _walk_class(class_dir: Path, root: Path, split: str | None) -> tuple[list[FoundFile], int]:
    found: list[FoundFile] = []
    ignored = 0
    for path in sorted(class_dir.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
            ignored += int(path.is_file())
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored += 1
            continue
        found.append(FoundFile(path, path.relative_to(root).as_posix(), class_dir.name, split))
    return found, ignored


def find_images(root: Path) -> Layout:
    """Walk `root`; raise DatasetError when it is missing, unreadable or has no class folders."""
    if not root.is_dir():
        raise DatasetError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
    try:
        return _walk(root)
    except OSError as exc:
        raise DatasetError(f"{exc.filename or root}: {exc.strerror or exc}") from None


def _walk(root: Path) -> Layout:
    split_layout = _is_split_layout(root)
    groups: list[tuple[Path, str | None]] = [(root, None)]
    if split_layout:
        groups = [(root / name, SPLIT_FOLDERS[name]) for name in sorted(SPLIT_FOLDERS) if (root / name).is_dir()]
    files: list[FoundFile] = []
    ignored = sum(1 for child in root.iterdir() if child.is_file())  # loose files beside the class folders
    classes: set[str] = set()
    for group_dir, split in groups:
        if split_layout:
            ignored += sum(1 for child in group_dir.iterdir() if child.is_file())
        for class_dir in _visible_dirs(group_dir):
            classes.add(class_dir.name)
            found, skipped = _walk_class(class_dir, root, split)
            files.extend(found)
            ignored += skipped
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders (expected one folder of images per class)")
    return Layout(sorted(classes), files, ignored, split_layout)
