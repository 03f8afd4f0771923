"""The package layout holds: an AST import graph (function-local imports included) has no cycle, the lifecycle
(`promotion`) sits on the training pipeline and never the other way round, and argparse stays in CLI modules."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tlserve", "training", "promotion", "service")

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[list[str]]:
    """Per imported name anywhere in `tree` (functions included), the module names it may be, innermost first."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ([alias.name] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield from ([f"{base}.{alias.name}", base] for alias in node.names)  # `from a import b`: a.b, else a


def import_graph(modules: Mapping[str, Path]) -> Graph:
    """module → the project modules it imports (for each import, the innermost module that exists)."""
    graph: Graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for candidates in imported_names(tree, module, path.name == "__init__.py"):
            name = next((c for c in candidates if c in modules), candidates[-1])
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        path = [start]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop(0)
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return []


def package_graph(graph: Mapping[str, Iterable[str]]) -> Graph:
    """Collapse to sub-packages (`promotion`, `service.gateway`, ...): an edge per cross-package import."""

    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "service" and len(parts) > 2 else parts[0]

    packages: Graph = {}
    for module, targets in graph.items():
        edges = packages.setdefault(package(module), set())
        edges.update(package(target) for target in targets if package(target) != package(module))
    return packages


def uses_argparse(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
        if isinstance(node, ast.Name | ast.Attribute) and getattr(node, "id", getattr(node, "attr", "")) == "Namespace":
            return True
    return False


def is_cli(module: str) -> bool:
    """`tlserve.cli`, `promotion.cli`, `service.gateway.settings_cli`, ...: a module named cli or *_cli."""
    name = module.rpartition(".")[2]
    return name == "cli" or name.endswith("_cli")


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return find_modules(ROOT, PACKAGES)


@pytest.fixture(scope="module")
def graph(modules: dict[str, Path]) -> Graph:
    return import_graph(modules)


def test_no_module_imports_itself_back_through_other_modules(graph: Graph) -> None:
    assert find_cycle(graph) == []


def test_no_package_imports_itself_back_through_other_packages(graph: Graph) -> None:
    assert find_cycle(package_graph(graph)) == []


def test_the_training_pipeline_never_imports_the_model_lifecycle(graph: Graph) -> None:
    bad = {m: sorted(t for t in ts if t.startswith("promotion")) for m, ts in graph.items() if m.startswith("training")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_the_serving_side_imports_neither_training_nor_promotion(graph: Graph) -> None:
    offline = ("training", "promotion")
    bad = {m: sorted(t for t in ts if t.startswith(offline)) for m, ts in graph.items() if m.startswith("service")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_the_shared_contract_package_imports_only_itself(graph: Graph) -> None:
    """tlserve.cli lists the command modules by name (importlib), so even it needs no import of them."""
    bad = {
        m: sorted(t for t in ts if not t.startswith("tlserve")) for m, ts in graph.items() if m.startswith("tlserve")
    }
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_argparse_and_namespace_stay_in_cli_modules(modules: dict[str, Path]) -> None:
    offenders = [
        module
        for module, path in modules.items()
        if not is_cli(module) and uses_argparse(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert offenders == []


def test_each_offline_package_has_one_command_line_module(modules: dict[str, Path]) -> None:
    for package in ("training", "promotion"):
        assert sorted(m for m in modules if m.startswith(f"{package}.") and is_cli(m)) == [f"{package}.cli"]


def test_lifecycle_modules_are_not_left_in_training(modules: dict[str, Path]) -> None:
    lifecycle = {"promote", "rollback", "retrain", "retrain_flow", "gates", "infra", "replicas", "audit", "retention"}
    lifecycle |= {"modelconfig", "modelservice", "inventory", "cli_models"}
    assert sorted(m for m in modules if m.startswith("training.") and m.split(".")[1] in lifecycle) == []


# --- the checks catch real violations ------------------------------------------------------------------------------


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_hidden_in_a_function_local_import_is_found(tmp_path: Path) -> None:
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/cli.py": "from pkg import flow\n",
        "pkg/flow.py": "def run():\n    from pkg.cli import options\n",
    })  # fmt: skip
    graph = import_graph(find_modules(tmp_path, ["pkg"]))

    assert graph["pkg.cli"] == {"pkg.flow"}
    assert find_cycle(graph) in (["pkg.cli", "pkg.flow", "pkg.cli"], ["pkg.flow", "pkg.cli", "pkg.flow"])


def test_relative_imports_and_package_cycles_are_found(tmp_path: Path) -> None:
    write(tmp_path, {
        "training/__init__.py": "",
        "training/train.py": "def f():\n    import promotion.gates\n",
        "promotion/__init__.py": "",
        "promotion/gates.py": "from . import retrain\n",
        "promotion/retrain.py": "from training.train import f\n",
    })  # fmt: skip
    graph = import_graph(find_modules(tmp_path, ["training", "promotion"]))

    assert graph["promotion.gates"] == {"promotion.retrain"}
    assert find_cycle(graph) != []
    assert find_cycle(package_graph(graph)) != []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_argparse_outside_a_cli_module_is_found(tmp_path: Path) -> None:
    assert uses_argparse(ast.parse("import argparse\n"))
    assert uses_argparse(ast.parse("def f(args: 'x.Namespace'):\n    return args.Namespace\n"))
    assert not uses_argparse(ast.parse("from dataclasses import dataclass\n"))
    assert is_cli("promotion.cli")
    assert is_cli("service.gateway.cli")
    assert is_cli("service.gateway.settings_cli")
    assert not is_cli("promotion.retrain")
