"""Whole-file replacement: write a temporary file in the target's folder, fsync it, rename it over the target.

A reader (or a crash) sees the old file or the new one, never a part; a killed writer leaves at most a temporary
file whose name starts with the given prefix, which readers of the folder must skip.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_atomically(
    target: Path, write: Callable[[BinaryIO], object], *, prefix: str, suffix: str, sync_folder: bool = False
) -> None:
    """`write(stream)` fills the temporary file; `sync_folder` also fsyncs the folder, so the rename itself survives a
    power cut (worth it for a rare, precious file such as models.config, not for a cache entry)."""
    handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if sync_folder:
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
