"""The import graph of cfcore has no cycles, between modules or between packages.

The graph is read from the source with `ast`, nothing is imported. Every import counts, those
inside functions (a lazy import still ties two modules together) and under `if TYPE_CHECKING:`
(an annotation still ties them: the type checker, the docs and the reader follow it). The root `cfcore/__init__.py` is the public facade that
re-exports everything, so imports of `cfcore` itself are not edges.

Two graphs are checked: modules (`cfcore.data.features`) and packages, where each subpackage is
one node (`cfcore.data`, `cfcore.viz`, ...) and each top-level module its own.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cfcore"

KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset(
    {
        # removed by the boundary rewrite
        # (models <-> persistence <-> softmax: removed by the class registry of persistence)
    }
)
"""Cycles that exist and are being removed; any other cycle fails the tests."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(name: str, path: Path) -> set[str]:
    """Every module name `path` imports, and `module.name` for each `from module import name`."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def module_graph() -> dict[str, set[str]]:
    """`{module: the cfcore modules it imports}`, without the root facade `cfcore`."""
    modules = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        if name != "cfcore":
            graph[name] = {
                m for m in _imported_names(name, path) if m in modules and m not in (name, "cfcore")
            }
    return graph


def package_graph() -> dict[str, set[str]]:
    """The module graph with each subpackage of cfcore collapsed into one node."""

    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, deps in module_graph().items():
        graph.setdefault(unit(name), set()).update(unit(d) for d in deps if unit(d) != unit(name))
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def _describe(found: set[frozenset[str]]) -> list[list[str]]:
    return sorted(sorted(c) for c in found)


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert cycles(graph) == {frozenset("abc"), frozenset("ef")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_graph_sees_relative_and_lazy_imports() -> None:
    graph = module_graph()
    assert "cfcore.data.features" in graph["cfcore.eval.popularity"]  # from ..data.features
    assert "cfcore.persistence" in graph["cfcore.models.mf"]  # inside a method
    assert "cfcore.cli.viz" in graph["cfcore.cli"]  # from .viz import register
    assert "cfcore.persistence" in graph["cfcore.models.base"]  # under TYPE_CHECKING


def test_graph_counts_imports_in_functions_and_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .typed import T\n"
        "def f():\n    from . import lazy\n"
    )
    found = _imported_names("pkg.mod", source)
    assert {"pkg.typed", "pkg.typed.T", "pkg.lazy"} <= found


def test_no_new_module_cycles() -> None:
    new = cycles(module_graph()) - KNOWN_CYCLES
    assert not new, f"import cycles between cfcore modules: {_describe(new)}"


def test_no_new_package_cycles() -> None:
    new = cycles(package_graph()) - KNOWN_CYCLES
    assert not new, f"import cycles between cfcore packages: {_describe(new)}"


def test_backend_boundary_imports_nothing_from_above() -> None:
    # The boundary sits below the mathematics, the models and the trainer: counting imports
    # inside functions and under TYPE_CHECKING, cfcore/backend/ reaches none of them.
    above = ("cfcore.maths", "cfcore.models", "cfcore.train")
    found = {
        (name, imported)
        for name, path in (
            (_module_name(p), p) for p in sorted((PACKAGE / "backend").rglob("*.py"))
        )
        for imported in _imported_names(name, path)
        if ".".join(imported.split(".")[:2]) in above
    }
    assert not found, f"cfcore/backend imports from above the boundary: {sorted(found)}"


def test_boundary_check_sees_a_lazy_import(tmp_path: Path) -> None:
    source = tmp_path / "bound.py"
    source.write_text("def f():\n    from ..maths import objectives\n")
    assert "cfcore.maths.objectives" in _imported_names("cfcore.backend.bound", source)


ABOVE_THE_BOUNDARY = ("cfcore.maths", "cfcore.models", "cfcore.train")


def _above_and_als(path: Path, name: str) -> list[str]:
    """What a backend module (`path`, module `name`) must not hold: its imports from above the
    boundary, and the functions and classes named like the ALS machinery (half-sweeps, row
    blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = [
        f"{path.name} imports {imported}"
        for imported in sorted(_imported_names(name, path))
        if ".".join(imported.split(".")[:2]) in ABOVE_THE_BOUNDARY
    ]
    found += [
        f"{path.name} defines {node.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and any(word in node.name.lower() for word in ("half_sweep", "row_blocks", "deviceblocks"))
    ]
    return found


def test_backends_offer_primitives_not_als_or_core_imports(tmp_path: Path) -> None:
    # A backend offers row-sharding primitives (`cfcore.backend.sharding.RowSharding`); the
    # sharded ALS half-sweep and row blocks are core's, written once
    # (`cfcore.train.placement.RowShardedPlacement`), and no backend imports the layers above.
    files = sorted((ROOT / "backends").rglob("*.py"))
    found = [s for p in files for s in _above_and_als(p, _module_name(p))]
    assert not found, f"backends holding ALS logic or importing above the boundary: {found}"
    example = tmp_path / "sharding.py"
    example.write_text(
        "from cfcore.train.placement import RowShardedPlacement\n"
        "class P:\n    def half_sweep(self, half): ...\n"
    )
    got = _above_and_als(example, "backends.cfcore_x.sharding")  # the check can fail
    assert any("imports cfcore.train.placement" in s for s in got), got
    assert "sharding.py defines half_sweep" in got, got


def _spec_parameters(path: Path) -> list[str]:
    """`function(parameter)` for each parameter of a function in `path` named like a model spec."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.name}:{node.name}({arg.arg})"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)
        if arg.arg == "spec" or arg.arg.endswith("_spec")
    ]


def test_no_backend_method_takes_a_model_spec(tmp_path: Path) -> None:
    # A backend offers primitives on arrays; the model's coefficients reach it as numbers or
    # arrays, never as the model's spec.
    from cfcore.backend import bound

    files = [*(PACKAGE / "backend").rglob("*.py"), *(ROOT / "backends").rglob("*.py")]
    found = [s for p in sorted(files) for s in _spec_parameters(p)]
    found += [n for n, fn in bound._METHODS.items() if "spec" in inspect.signature(fn).parameters]
    assert not found, f"backend methods taking a model spec: {found}"
    example = tmp_path / "ops.py"
    example.write_text("class B:\n    def loss(self, spec, params): ...\n")
    assert _spec_parameters(example) == ["ops.py:loss(spec)"]  # the check can fail
