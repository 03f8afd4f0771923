"""Staging directories of the model repository, and the garbage collection of those whose writer is gone.

A writer holds an exclusive flock on `<staging dir>.lock` (beside the directory, so it never ends up inside a
published version) from before the directory exists until it is published or discarded. The kernel releases the
lock when the writer dies, even by SIGKILL, so "the lock can be taken" means "nobody will ever finish this
directory": `remove_stale_staging` deletes exactly those, and never a live writer's directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
LOCK_SUFFIX = ".lock"
# Staging directories made before writers took a lock have no lock file: they count as stale once this old
# (their writer exported within seconds to minutes of creating them).
UNLOCKED_STALE_AFTER_S = 3600.0

# staging directory → file descriptor of the flock this process holds as its writer.
_held_locks: dict[Path, int] = {}


@dataclass(frozen=True)
class Removed:
    """A staging directory (or orphaned lock file) removed by garbage collection, and the bytes it freed."""

    path: Path
    size_bytes: int


def lock_path(staged: Path) -> Path:
    return staged.with_name(staged.name + LOCK_SUFFIX)


def new_staging_dir(model_dir: Path) -> Path:
    """A fresh directory beside the versions (same filesystem, so the final rename is atomic), locked by us."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staged = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(lock_path(staged), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a brand-new file: nobody else can hold it
    _held_locks[staged] = fd
    staged.mkdir()
    return staged


def release_staging(staged: Path) -> None:
    """Drop our writer lock (after the directory was published or removed)."""
    fd = _held_locks.pop(staged, None)
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        lock_path(staged).unlink()  # unlinked while still locked: a collector never deletes a live directory
    os.close(fd)


def discard_staging(staged: Path) -> None:
    """Remove an unfinished staging directory of ours (its export failed) and release it."""
    shutil.rmtree(staged, ignore_errors=True)
    release_staging(staged)


def remove_stale_staging(model_dir: Path, *, older_than_s: float = UNLOCKED_STALE_AFTER_S) -> list[Removed]:
    """Delete the staging directories of `model_dir` whose writer is gone, and orphaned lock files.

    `older_than_s` applies only to directories without a lock file (made before writers took locks).
    """
    if not model_dir.is_dir():
        return []
    removed: list[Removed] = []
    for entry in sorted(model_dir.iterdir()):
        if not entry.name.startswith(STAGING_PREFIX):
            continue
        if entry.name.endswith(LOCK_SUFFIX):
            staged = entry.with_name(entry.name.removesuffix(LOCK_SUFFIX))
            if not staged.exists():
                removed += _remove_if_unlocked(staged)
        elif entry.is_dir():
            removed += _remove_if_unlocked(entry) if lock_path(entry).exists() else _remove_if_old(entry, older_than_s)
    return removed


def _remove_if_unlocked(staged: Path) -> list[Removed]:
    with _writer_gone(staged) as gone:
        if not gone:
            return []
        size = tree_size(staged)
        shutil.rmtree(staged, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lock_path(staged).unlink()
    logger.info("removed %s (its writer is gone; %d bytes)", staged, size)
    return [Removed(staged, size)]


@contextlib.contextmanager
def _writer_gone(staged: Path) -> Iterator[bool]:
    """True inside the block if we could take the writer's lock (held until the block ends)."""
    try:
        fd = os.open(lock_path(staged), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:  # released (published or discarded) since the directory scan
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove_if_old(staged: Path, older_than_s: float) -> list[Removed]:
    if staged.stat().st_mtime >= time.time() - older_than_s:
        return []
    size = tree_size(staged)
    shutil.rmtree(staged, ignore_errors=True)
    logger.info("removed %s (no writer lock, older than %.0fs; %d bytes)", staged, older_than_s, size)
    return [Removed(staged, size)]


def tree_size(root: Path) -> int:
    """Bytes of the regular files under root (0 if it is gone)."""
    if root.is_file():
        return root.stat().st_size
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def collect_garbage(models_dir: Path, *, older_than_s: float = UNLOCKED_STALE_AFTER_S) -> list[Removed]:
    """`remove_stale_staging` over every model folder of the repository."""
    if not models_dir.is_dir():
        return []
    removed: list[Removed] = []
    for model_dir in sorted(models_dir.iterdir()):
        if model_dir.is_dir() and not model_dir.name.startswith("."):
            removed += remove_stale_staging(model_dir, older_than_s=older_than_s)
    return removed
