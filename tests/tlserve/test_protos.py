"""tlserve.protos: generated from the pinned packages, importable without TensorFlow, wire-identical to the official
`tensorflow_serving.apis` modules, and loadable next to them in one process in either order."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.thin import REPO, attempted_heavy_imports, thin_env
from tests.tlserve import protocol_samples

PROTOS = REPO / "tlserve" / "protos"
GENERATED_PREFIX = "tlserve.protos."


def run_python(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def embedded_descriptor(path: Path) -> bytes:
    """The serialized FileDescriptorProto a generated module adds to the pool (read without importing it)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            value = node.args[0]
            assert isinstance(value, ast.Constant)
            return bytes(value.value)
    raise AssertionError(f"{path} adds no descriptor")


def test_committed_protos_equal_a_fresh_generation_from_the_pinned_packages() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"run `make protos`:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("path", sorted(PROTOS.rglob("*_pb2.py")), ids=lambda p: str(p.relative_to(PROTOS)))
def test_each_generated_file_carries_the_official_descriptor_byte_for_byte(path: Path) -> None:
    official_module = ".".join(path.relative_to(PROTOS).with_suffix("").parts)
    if official_module.startswith("xla."):  # TensorFlow ships XLA's protos under tensorflow.compiler
        official_module = "tensorflow.compiler." + official_module
    official = importlib.import_module(official_module)
    assert official.DESCRIPTOR.name == path.relative_to(PROTOS).as_posix().replace("_pb2.py", ".proto")
    assert embedded_descriptor(path) == official.DESCRIPTOR.serialized_pb


def test_generated_modules_import_without_tensorflow(tmp_path: Path) -> None:
    log = tmp_path / "imports.log"
    code = (
        "import importlib, pathlib, sys\n"
        "root = pathlib.Path('tlserve/protos')\n"
        "for path in sorted(root.rglob('*_pb2*.py')):\n"
        "    importlib.import_module('.'.join(path.with_suffix('').parts))\n"
        "print(sum(1 for name in sys.modules if name.startswith('tlserve.protos.')))\n"
    )
    imported = int(run_python(["-c", code], env=thin_env(log)))
    assert imported >= len(list(PROTOS.rglob("*_pb2*.py")))
    assert attempted_heavy_imports(log) == []


def test_every_message_is_wire_identical_in_both_directions(tmp_path: Path) -> None:
    env = thin_env(tmp_path / "imports.log")
    module = "tests.tlserve.protocol_samples"
    official = protocol_samples.serialize(protocol_samples.build(""))
    # Built by the generated modules in a process without TensorFlow: the same bytes, field for field.
    generated = json.loads(run_python(["-m", module, GENERATED_PREFIX], env=env))
    assert generated == official
    # Parsed by the other side and serialized again: nothing lost either way.
    reparsed = run_python(["-m", module, GENERATED_PREFIX, "--reparse"], env=env, stdin=json.dumps(official))
    assert json.loads(reparsed) == official
    assert protocol_samples.reparse("", generated) == official
    assert {"TensorProto(string)", "TensorProto(float)", "PredictRequest", "PredictResponse"} <= set(official)
    assert attempted_heavy_imports(tmp_path / "imports.log") == []


@pytest.mark.parametrize("first", ["official", "generated"])
def test_official_and_generated_modules_share_one_descriptor_and_class_in_either_order(first: str) -> None:
    code = (
        "import importlib, sys\n"
        "official = 'tensorflow_serving.apis.predict_pb2'\n"
        "generated = 'tlserve.protos.' + official\n"
        "names = [official, generated] if sys.argv[1] == 'official' else [generated, official]\n"
        "a, b = (importlib.import_module(name) for name in names)\n"
        "request = a.PredictRequest()\n"
        "request.model_spec.name = 'pets'\n"
        "print(a.DESCRIPTOR is b.DESCRIPTOR, a.PredictRequest is b.PredictRequest,"
        " isinstance(request, b.PredictRequest), b.PredictRequest.FromString(request.SerializeToString()) == request)\n"
    )
    assert run_python(["-c", code, first]).split() == ["True", "True", "True", "True"]
