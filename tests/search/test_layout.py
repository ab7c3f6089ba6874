"""search/ is laid out so a newcomer finds a behaviour in one hop: every module opens with a
comment saying what it holds, and no two modules import each other (directly or round a loop)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _import_cycles() -> object:
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("package", ["search", "storage", "objectives"])
def test_no_import_loops(package: str) -> None:
    finder = _import_cycles()
    loops = finder.cycles(finder.import_graph(ROOT / package))
    assert not loops, [" -> ".join([*loop, loop[0]]) for loop in loops]


def test_the_loop_finder_sees_function_level_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_a.py").write_text("from ._b import thing\n")
    (package / "_b.py").write_text("def thing():\n    from ._a import other\n")
    finder = _import_cycles()
    assert finder.cycles(finder.import_graph(package)) == [["pkg._a", "pkg._b"]]


def test_every_search_module_opens_with_what_it_holds() -> None:
    missing = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "search").rglob("*.py"))
               if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing
