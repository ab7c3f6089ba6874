"""The layout a newcomer relies on: every module opens with what it holds, no two modules import
each other (directly or round a loop), objectives/ is layered into subpackages that import each
other only through their `__init__`, the code imports as one namespace (`medsweep.*`), and one
module owns Keras session state."""

from __future__ import annotations

import ast
import configparser
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "objectives", "storage")
# objectives' layers, lowest first: each may import only the layers before it.
OBJECTIVE_LAYERS = ("config", "metrics", "images", "model", "training", "evaluation")
# Modules at objectives/'s root that every layer may import: the error classes, the quiet Keras import
# and the text helpers (reading text files, quoting user values in errors).
OBJECTIVE_FOUNDATION = ("_errors", "_keras", "_text")


def _import_cycles() -> object:
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_files(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.ImportFrom, ast.Import))]


@pytest.mark.parametrize("package", PACKAGES)
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


def test_every_module_opens_with_what_it_holds() -> None:
    missing = [str(path.relative_to(ROOT)) for path in _python_files(*PACKAGES)
               if not ast.get_docstring(ast.parse(path.read_text())) and path.read_text().strip()]
    assert not missing


def test_objectives_layers_import_each_other_only_through_their_init() -> None:
    """A subpackage imports another only as `from ..layer import name`, and only a lower layer."""
    wrong = []
    for path in _python_files("objectives"):
        parts = path.relative_to(ROOT / "objectives").parts
        layer = parts[0] if len(parts) > 1 else None
        for node in _imports(path):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            if layer is None:  # objectives/__init__.py and the foundation modules
                target = (node.module or "").split(".")
                if target[0] in OBJECTIVE_LAYERS and len(target) > 1:
                    wrong.append(f"{path.name}: from .{node.module}")
                continue
            if node.level == 1:
                continue  # within the layer
            target = (node.module or "").split(".")
            where = f"{'/'.join(parts)}:{node.lineno} from {'.' * node.level}{node.module}"
            if target[0] in OBJECTIVE_FOUNDATION:
                continue
            if target[0] not in OBJECTIVE_LAYERS or len(target) > 1:
                wrong.append(f"{where} (import the layer's __init__)")
            elif OBJECTIVE_LAYERS.index(target[0]) >= OBJECTIVE_LAYERS.index(layer):
                wrong.append(f"{where} (a lower layer may not import a higher one)")
    assert not wrong, wrong


def test_every_objectives_layer_names_its_public_api() -> None:
    for layer in OBJECTIVE_LAYERS:
        init = ROOT / "objectives" / layer / "__init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), layer
        assert any(isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
                   for node in tree.body), f"{layer}/__init__.py has no __all__"
    folders = sorted(p.name for p in (ROOT / "objectives").iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(OBJECTIVE_LAYERS)


def test_code_outside_objectives_uses_only_its_public_names() -> None:
    """search/, storage/ and bench/ import objectives' layers, never their private modules."""
    private = []
    for path in _python_files("search", "storage", "bench"):
        for node in _imports(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medsweep.objectives"):
                if any(part.startswith("_") for part in node.module.split(".")):
                    private.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert not private, private


def test_one_module_owns_keras_session_state() -> None:
    owner = ROOT / "objectives" / "training" / "_session.py"
    calls = ("clear_session", "set_dtype_policy", "_COMPILED_HEADS", "_COMPILED_TOPS")
    elsewhere = [f"{path.relative_to(ROOT)}: {call}" for path in _python_files(*PACKAGES) if path != owner
                 for call in calls if call in path.read_text()]
    assert not elsewhere, elsewhere
    assert all(call in owner.read_text() for call in calls)


def test_the_code_imports_as_one_namespace() -> None:
    """No module anywhere in the repository imports the bare top-level names (which would load a
    second copy of a module, or a different distribution's `storage`)."""
    bare = []
    for path in _python_files(*PACKAGES, "tests", "bench", "scripts"):
        for node in _imports(path):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if any(name.split(".")[0] in PACKAGES for name in names):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, bare


def test_setup_cfg_installs_every_package_under_the_namespace() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    folders = {"medsweep." + ".".join(path.parent.relative_to(ROOT).parts)
               for package in PACKAGES for path in (ROOT / package).rglob("__init__.py")}
    assert listed == folders
    mapping = dict(line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines())
    assert mapping == {f"medsweep.{package}": package for package in PACKAGES}


def test_module_names_are_not_repeated_across_packages() -> None:
    seen: dict[str, str] = {}
    repeated = []
    for path in _python_files(*PACKAGES):
        if path.name in ("__init__.py", "_errors.py"):
            continue
        if path.name in seen:
            repeated.append(f"{path.relative_to(ROOT)} and {seen[path.name]}")
        seen[path.name] = str(path.relative_to(ROOT))
    assert not repeated, repeated
