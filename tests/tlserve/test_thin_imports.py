"""No module on the thin side imports TensorFlow, Keras or tensorflow_serving, at any level (function-local too).

The thin side is what the gateway, `tlserve predict`, `models`, `promote`, `rollback` and `--help` load. The
subprocess tests (tests/e2e/test_thin_commands.py) prove the commands run without those packages; this check
names the offending line, including in code paths those runs did not reach. Folders are walked as they exist,
so modules moving between packages stay covered.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.thin import REPO

HEAVY = {"tensorflow", "keras", "tensorflow_serving"}
THIN_FOLDERS = ("tlserve", "service/gateway", "promotion")
THIN_FILES = ("service/client.py",)
# training/ modules the thin commands load (their flags, the repository lock, staging gc): thin, unlike the
# rest of the training pipeline, which imports TensorFlow inside its functions or at the top.
THIN_TRAINING_MODULES = ("cli", "config", "live", "repository", "staging")
GENERATED = REPO / "tlserve" / "protos"
# Modules that run a model, with why. A file listed here may import TensorFlow anywhere in it.
ALLOWED_FILES: dict[str, str] = {}
# Functions that run a model, with why; only these functions may import TensorFlow in a thin module.
ALLOWED_FUNCTIONS = {
    "probe_in_process": "retrain's infra gate without a model server: loads the SavedModel and runs it in-process",
    "evaluate_on_holdout": "retrain scores the candidate and stable on one holdout by running both SavedModels",
}


def thin_files() -> list[Path]:
    files = [path for folder in THIN_FOLDERS if (REPO / folder).is_dir() for path in (REPO / folder).rglob("*.py")]
    files += [REPO / name for name in THIN_FILES]
    files += [REPO / "training" / f"{name}.py" for name in THIN_TRAINING_MODULES]
    return sorted(
        path
        for path in files
        if path.is_file() and GENERATED not in path.parents and path.relative_to(REPO).as_posix() not in ALLOWED_FILES
    )


def heavy_imports(path: Path) -> list[str]:
    """'line: module (in function)' for every import of a heavy package outside the allowed functions."""
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            modules = [
                arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            ]
        for module in modules:
            if module.split(".")[0] in HEAVY and function not in ALLOWED_FUNCTIONS:
                found.append(f"{node.lineno}: {module}" + (f" (in {function})" if function else ""))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), None)
    return found


def test_the_thin_side_is_found() -> None:
    names = {path.relative_to(REPO).as_posix() for path in thin_files()}
    assert "tlserve/cli.py" in names
    assert any(name.startswith("service/gateway/") or name.startswith("service/client") for name in names)
    assert any("modelconfig" in name or "models_config" in name for name in names)


@pytest.mark.parametrize("path", thin_files(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_thin_module_imports_no_tensorflow_keras_or_tensorflow_serving(path: Path) -> None:
    assert heavy_imports(path) == []


def test_the_check_sees_function_local_and_dynamic_imports(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "import importlib\n"
        "def handler():\n"
        "    from tensorflow.core.framework import types_pb2\n"
        "    importlib.import_module('keras')\n"
        "def probe_in_process():\n"
        "    import tensorflow as tf\n"
    )
    assert heavy_imports(module) == [
        "3: tensorflow.core.framework (in handler)",
        "4: keras (in handler)",
    ]
