"""docs/design.md stays true of the code: it names every module of the three packages, and
every link in it stays inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def test_every_package_module_is_in_the_design_doc() -> None:
    text = DESIGN.read_text()
    modules = [str(path.relative_to(ROOT)) for package in ("search", "objectives", "storage")
               for path in sorted((ROOT / package).rglob("*.py"))
               if not (path.name == "__init__.py" and path.parent.name in ("study", "workers", "results", "report",
                                                                            "config", "metrics", "images", "model",
                                                                            "training", "evaluation"))]
    missing = [module for module in modules if module not in text]
    assert not missing, f"docs/design.md's module map lacks {missing}"
    named = set(re.findall(r"(?<![\w/])((?:search|objectives|storage)/[\w/]+\.py)\b", text))
    gone = sorted(name for name in named if not (ROOT / name).is_file())
    assert not gone, f"docs/design.md names modules that do not exist: {gone}"


def test_the_design_doc_links_nothing_outside_the_repository() -> None:
    text = DESIGN.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    outside = [link for link in links if link.startswith(("http:", "https:", "/"))
               or not (DESIGN.parent / link.split("#")[0]).resolve().is_relative_to(ROOT)]
    assert not outside, outside
    assert "../shared" not in text and "shared/DESIGN" not in text
