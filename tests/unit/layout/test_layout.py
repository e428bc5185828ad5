"""The package layout holds: layers point down, no import cycles, the operator never reaches the local stack.

Imports are read from the source with ``ast`` (module-level and function-level alike), so a lazy import inside a
function counts: a cycle or a forbidden dependency is a design fault even when Python would tolerate it at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = {
    "hybridrec_operator": ROOT / "operator" / "hybridrec_operator",
    "hybridrec_server": ROOT / "model_server" / "hybridrec_server",
    "hybridrec_local": ROOT / "local" / "hybridrec_local",
}
# Each layer of the operator and what it may import (inside hybridrec_operator): dependencies point down.
LAYERS = {
    "api": set(),
    "core": {"api"},
    "sim": {"api", "core"},
    "controller": {"api", "core"},
    "cli": {"api", "core", "sim", "controller"},
}
# Pure layers: no I/O libraries.
IMPURE = {"kopf", "kubernetes", "httpx", "requests", "boto3", "urllib", "socket", "subprocess", "asyncio", "threading"}
PURE_EXCEPTIONS = ("kubernetes.utils.quantity",)  # a pure parser of Kubernetes quantities


def module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(package, p): p for p in sorted(PACKAGES[package].rglob("*.py"))}


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                mod = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{alias.name}" for alias in node.names)


def internal_graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        # "from pkg import sub" names a module; "from pkg.mod import func" names mod: keep only real modules.
        graph[name] = {imp for imp in imports_of(name, path) if imp in mods and imp != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == grey:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == white and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = black
        return None

    for start in sorted(graph):
        if colour[start] == white and (found := visit(start)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    graph = internal_graph(package)
    # A package's __init__ importing its own submodules is not a cycle of design; keep only module -> module edges.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_operator_never_imports_the_local_stack_or_torch() -> None:
    offenders = [
        f"{name} imports {imp}"
        for name, path in modules("hybridrec_operator").items()
        for imp in imports_of(name, path)
        if imp.split(".")[0] in {"hybridrec_local", "hybridrec_server", "torch", "matplotlib_inline"}
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_point_down(layer: str) -> None:
    allowed = LAYERS[layer] | {layer}
    offenders = []
    for name, path in modules("hybridrec_operator").items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] != layer:
            continue
        for imp in imports_of(name, path):
            ip = imp.split(".")
            if ip[0] == "hybridrec_operator" and len(ip) > 1 and ip[1] in LAYERS and ip[1] not in allowed:
                offenders.append(f"{name} imports {imp}")
    assert not offenders, offenders


@pytest.mark.parametrize("layer", ["api", "core"])
def test_pure_layers_do_no_io(layer: str) -> None:
    offenders = [
        f"{name} imports {imp}"
        for name, path in modules("hybridrec_operator").items()
        if name.split(".")[1:2] == [layer]
        for imp in imports_of(name, path)
        if imp.split(".")[0] in IMPURE and not imp.startswith(PURE_EXCEPTIONS)
    ]
    assert not offenders, offenders


def test_no_global_statements_in_the_operator() -> None:
    """Module-level state rebound through ``global`` is the shared mutable seam this layout forbids."""
    offenders = [
        f"{name}:{node.lineno}"
        for name, path in modules("hybridrec_operator").items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Global)
    ]
    assert not offenders, offenders


def test_test_modules_have_unique_names() -> None:
    # Test folders are not packages: pytest imports each test module by its file name, so two files of one name in
    # different tiers make the second fail to collect ("import file mismatch") in a clean checkout.
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, clashes
