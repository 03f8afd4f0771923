"""Loaded by a child Python whose PYTHONPATH starts here: makes `import tensorflow` / `keras` fail in that process.

Active only when TLSERVE_BLOCK_HEAVY_IMPORTS names a log file; every attempted import is appended there (even one
a library would catch and ignore), so a test can assert that nothing even tried. The variable is removed from the
environment once read, so children this process starts (the embedded model server of `tlserve serve`) are normal.
"""

from __future__ import annotations

import os
import sys

BLOCKED = ("tensorflow", "keras", "tensorflow_serving")


class _HeavyImportBlocker:
    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".", 1)[0] in BLOCKED:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"{os.getpid()} {name}\n")
            raise ImportError(f"{name} is blocked in this process (a thin tlserve command must not import it)")


_log_path = os.environ.pop("TLSERVE_BLOCK_HEAVY_IMPORTS", "")
if _log_path:
    sys.meta_path.insert(0, _HeavyImportBlocker(_log_path))
