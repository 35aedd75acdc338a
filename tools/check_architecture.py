"""The package's shape: layers that import one way, no cycle, short functions and modules.

Run ``python -m tools.check_architecture``; it prints every breach and exits 1 if any.
Imports count wherever they are written: at the top, inside functions, under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "repobackup"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700
# Modules that are mostly a format table or a data table, allowed to be longer.
LONG_MODULES: dict[str, str] = {}

# Layers from the bottom up: a module may import its own layer and the ones below.
LAYERS: list[set[str]] = [
    {"exceptions", "_version", "_model"},
    {"_backends", "_archive", "_tasks"},
    {"_pipeline"},
    {"_engine"},
    {"adapters", "cli", "testing", "__init__"},
]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``repobackup._model.task``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package modules that one module imports, relative imports resolved."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    return None


def package_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems() -> list[str]:
    """Every breach of the rules above, one line each."""
    known = modules()
    graph: dict[str, set[str]] = {}
    found: list[str] = []
    for name, path in known.items():
        targets = {t for t in imports(name, path, known) if t in known and t != name}
        graph[name] = targets
        mine = layer_of(name)
        for target in sorted(targets):
            theirs = layer_of(target)
            if target == "repobackup" and name != "repobackup":
                found.append(f"{name}: imports the package root; import the module instead")
            elif mine is not None and theirs is not None and theirs > mine:
                found.append(f"{name}: imports {target}, a layer above it")
        lines = path.read_text().count("\n")
        limit = MAX_MODULE_LINES if name not in LONG_MODULES else 10**9
        if lines > limit:
            found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(
                        f"{name}:{node.lineno}: {node.name} is {length} lines "
                        f"(at most {MAX_FUNCTION_LINES})"
                    )
    # Package-level cycles: between subpackages, not just modules.
    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        packages.setdefault(package_of(name), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(name)
        )
    found.extend(f"import cycle between modules: {' -> '.join(c)}" for c in cycles(graph))
    found.extend(f"import cycle between packages: {' -> '.join(c)}" for c in cycles(packages))
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"{len(found)} problem(s) in {len(modules())} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
