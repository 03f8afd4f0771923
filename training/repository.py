"""The model repository on disk (TF Serving's layout): staging, atomic publication, version listing.

A version appears by a single rename of a finished staging directory, so TF Serving's poller (or the
embedded model server's) never sees a half-written SavedModel. Staging directories start with a dot
and are not integers, so they are invisible to every version scan.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tlserve.contract import list_versions

STAGING_PREFIX = ".staging-"
_LOCK_FILE = ".publish.lock"


class PublishError(RuntimeError):
    """A finished export could not be moved into place."""


def new_staging_dir(model_dir: Path) -> Path:
    """A fresh directory beside the versions (same filesystem, so the final rename is atomic)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staged = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staged.mkdir()
    return staged


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the block: serialises processes on one host."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under root, so a crash after the rename leaves whole files."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_version(staged: Path, model_dir: Path, *, max_attempts: int = 100) -> int:
    """Move a finished export into place as the next version and return its number.

    Never overwrites: a rename onto an existing (non-empty) version fails and the next number is tried,
    so two racing publishers always end up with two different versions.
    """
    _fsync_tree(staged)
    # Serialises publishers on one host; the rename below still refuses to overwrite across hosts.
    with file_lock(model_dir / _LOCK_FILE):
        for _attempt in range(max_attempts):
            version = max(list_versions(model_dir), default=0) + 1
            target = model_dir / str(version)
            if target.exists():
                continue
            try:
                os.rename(staged, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise PublishError(f"cannot publish {staged} as {target}: {exc.strerror}") from exc
            _fsync_dir(model_dir)
            return version
    raise PublishError(f"no free version number under {model_dir} after {max_attempts} attempts")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_staging(model_dir: Path, *, older_than_s: float = 24 * 3600) -> list[Path]:
    """Delete staging directories left by killed exports (they were never visible as versions)."""
    removed: list[Path] = []
    if not model_dir.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for child in model_dir.iterdir():
        if child.name.startswith(STAGING_PREFIX) and child.stat().st_mtime < cutoff:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def version_dir(models_dir: Path, name: str, version: int) -> Path:
    return models_dir / name / str(version)
