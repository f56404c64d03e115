"""The package's structure: subpackages in layers, imports pointing one way, no import cycle.

Imports are read from the source with ``ast`` (those inside functions too: a late import is still
a dependency), so a cycle cannot hide behind an import placed in a function body.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = "mechshift_utils"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Each subpackage may import itself and the ones listed for it (mechshift_utils/__init__.py says why).
ALLOWED = {
    "core": set(),
    "tasks": {"core"},
    "models": {"core", "tasks"},
    "evaluation": {"core", "tasks", "models"},
    "attribution": {"core", "tasks", "models"},
    "analysis": {"core", "tasks", "models", "attribution"},
    "notebook": {"core", "tasks", "models", "evaluation", "attribution", "analysis"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, resolved to module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when one has that name, else pkg itself
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module attribute: its module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a cycle's members."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, f"import cycles inside {PACKAGE}: {found}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            a, b = layer(module), layer(target)
            if a is None or b is None or a == b:
                continue
            if b not in ALLOWED[a]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer order (see mechshift_utils/__init__.py):\n" + "\n".join(wrong)


def test_every_module_lives_in_a_layer():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py"], f"modules outside the subpackages: {top}"
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == set(ALLOWED)
    assert not import_graph()[PACKAGE], "the top-level __init__ imports nothing"


def test_the_checker_finds_a_cycle_and_a_wrong_way_import(tmp_path, monkeypatch):
    """The test above can fail: a planted cycle (through a late import) and an upward import are caught."""
    pkg = tmp_path / PACKAGE
    for sub in ("core", "tasks"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from ..tasks import b\n")
    (pkg / "tasks" / "b.py").write_text("from ..core.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    graph = import_graph()
    assert graph[f"{PACKAGE}.core.a"] == {f"{PACKAGE}.tasks.b"}
    assert cycles(graph) == [[f"{PACKAGE}.core.a", f"{PACKAGE}.tasks.b"]]
    with pytest.raises(AssertionError, match="core.a -> mechshift_utils.tasks.b"):
        test_imports_point_down_the_layers()
