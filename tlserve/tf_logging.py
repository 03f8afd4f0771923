"""Keep TensorFlow's C++ log lines (absl's pre-init notice, oneDNN, CPU features) off the console by default.

TF_CPP_MIN_LOG_LEVEL only works if set before TensorFlow loads, and even then the lines TensorFlow prints while
its shared libraries load (before absl::InitializeLog) ignore it. So the entry point also installs an import hook
that loads `tensorflow` with file descriptor 2 pointed at /dev/null; TensorFlow itself is not imported here, so
commands that never need it (gateway, predict, models) stay light.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

LOG_LEVEL_ENV = "TLSERVE_LOG_LEVEL"
QUIET_TF_CPP_LEVEL = "2"  # hide INFO and WARNING from TensorFlow's C++ side; errors still show


def log_level(verbose: bool) -> str:
    """`DEBUG` with --verbose, else $TLSERVE_LOG_LEVEL (upper-cased), else `INFO`."""
    if verbose:
        return "DEBUG"
    return os.environ.get(LOG_LEVEL_ENV, "").strip().upper() or "INFO"


def quiet_tensorflow(level: str) -> None:
    """Unless `level` is DEBUG: TensorFlow's C++ logging above WARNING only, and a silent first import."""
    if level == "DEBUG":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_CPP_LEVEL)
    if "tensorflow" not in sys.modules and not any(isinstance(item, _QuietImport) for item in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null for the block (C++ writes bypass sys.stderr), then restore it."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once (then removes itself) and wraps its loader so the import runs silenced."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilentLoader(spec.loader)
        return spec


class _SilentLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__.loader = self._loader  # type: ignore[union-attr]
        with stderr_silenced():
            self._loader.exec_module(module)
