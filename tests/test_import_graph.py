"""Imports point down the layers, numpy_ref <- triton_kernels <- torch_model, and no modules import each other.

Every `import` statement of the three packages is read with ast (module level and inside functions alike, since a
function-level import is an arrow too, only a later one), resolved to the package's own modules, and the graph is
checked: no arrow from numpy_ref to triton_kernels or torch_model, none from triton_kernels to torch_model, and no
cycle. `from pkg import name` counts as an arrow to pkg.name when that is a module, else to pkg's __init__; a module
importing its own package's __init__ is not counted (Python runs a package's __init__ before any of its modules).
"""
from __future__ import annotations

import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy_ref", "triton_kernels", "torch_model")
LAYER = {"numpy_ref": 0, "triton_kernels": 1, "torch_model": 2}


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its file)."""
    mods = modules()

    def resolve(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        arrows = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found and found != name and not name.startswith(found + "."):
                    arrows.add(found)
        graph[name] = arrows
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_graph_sees_the_packages_and_function_level_imports():
    graph = import_graph()
    assert {"numpy_ref.functional", "triton_kernels.conv", "torch_model.cli"} <= set(graph)
    # torch_model.bench.lessons imports the lessons' harness inside its functions only: still an arrow
    assert "triton_kernels.lessons.harness" in graph["torch_model.bench.lessons"]
    # what the lessons and the benches share sits below both
    assert "triton_kernels.testing" in graph["triton_kernels.lessons.harness"]
    assert "triton_kernels.testing" in graph["torch_model.bench.layers"]


def test_no_arrow_points_up():
    up = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]])
    assert not up, "imports pointing up the layers (numpy_ref <- triton_kernels <- torch_model):\n" + "\n".join(up)


def test_no_cycles():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"modules importing each other: {found}"


def test_the_lessons_and_the_bench_do_not_import_each_other():
    graph = import_graph()
    assert not any(t.startswith("torch_model") for t in graph["triton_kernels.lessons.harness"])
    assert not any(c & {"triton_kernels.lessons.harness", "torch_model.bench.lessons"} for c in cycles(graph))


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
