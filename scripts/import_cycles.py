"""List import loops between a package's modules: every relative import, at module level or
inside a function, is an edge. Usage: python scripts/import_cycles.py search objectives storage"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (relative imports only)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package_root.rglob("*.py")):
        name = module_name(path, package_root)
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parent = base[: len(base) - (node.level - 1)]
                if node.module:
                    targets.add(".".join([*parent, node.module]))
                else:  # `from . import _layers`
                    targets.update(".".join([*parent, alias.name]) for alias in node.names)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary loop, each listed once starting at its smallest module name."""
    found: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for target in sorted(graph.get(path[-1], ())):
            if target not in graph:
                continue
            if target in path:
                loop = path[path.index(target):]
                start = loop.index(min(loop))
                found.add(tuple(loop[start:] + loop[:start]))
            else:
                walk([*path, target])

    for module in sorted(graph):
        walk([module])
    return [list(loop) for loop in sorted(found)]


def main(packages: list[str]) -> int:
    loops = [loop for package in packages for loop in cycles(import_graph(Path(package).resolve()))]
    for loop in loops:
        print(" -> ".join([*loop, loop[0]]))
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["search", "objectives", "storage"]))
