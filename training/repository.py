"""The model repository on disk (TF Serving's layout): staging, atomic publication, version listing.

A version appears by a single rename of a finished staging directory, so TF Serving's poller (or the
embedded model server's) never sees a half-written SavedModel. Staging directories start with a dot
and are not integers, so they are invisible to every version scan; `training.staging` creates them and
removes those a killed writer left behind (each publish does, and `tlserve models gc`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tlserve.contract import list_versions
from training.staging import STAGING_PREFIX, new_staging_dir, release_staging, remove_stale_staging

__all__ = [
    "STAGING_PREFIX",
    "PublishError",
    "file_lock",
    "new_staging_dir",
    "publish_version",
    "remove_stale_staging",
    "version_dir",
]
_LOCK_FILE = ".publish.lock"


class PublishError(RuntimeError):
    """A finished export could not be moved into place."""


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
        # Leftovers of killed exports (a full SavedModel each) go now; `staged` is ours, locked, and stays.
        remove_stale_staging(model_dir)
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
            release_staging(staged)
            return version
    raise PublishError(f"no free version number under {model_dir} after {max_attempts} attempts")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def version_dir(models_dir: Path, name: str, version: int) -> Path:
    return models_dir / name / str(version)
