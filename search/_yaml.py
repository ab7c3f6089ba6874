"""Reading the YAML files users hand to medsweep (search spaces, exported configs): UTF-8 text
only, and no aliases, since a 1 KB file of nested aliases (a "billion laughs") expands to
gigabytes while it is parsed. medsweep never writes anchors or aliases itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medsweep.objectives import read_text_file

# Space files and exports are a few kB; anything far larger is a wrong path.
MAX_YAML_BYTES = 1024 * 1024


class _AliasFound(Exception):
    def __init__(self, mark: Any) -> None:
        self.mark = mark


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that stops at the first alias (`*name`) instead of expanding it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark)
        return super().compose_node(parent, index)


class _PlainDumper(yaml.SafeDumper):
    """yaml.SafeDumper that writes a value shared by two keys twice instead of as an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(document: Any) -> str:
    """`document` as YAML without anchors or aliases (so `load_yaml_file` reads it back), keys in order."""
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False)


def load_yaml_file(path: str | Path, what: str, hint: str, error: type[Exception]) -> Any:
    """The file's YAML document (None when empty), or `error` with one line: unreadable, not
    UTF-8, too large, invalid YAML, or using aliases. `what` names the file ("search space
    file"), `hint` says what to do instead."""
    path = Path(path)
    text = read_text_file(path, what, hint, error, max_bytes=MAX_YAML_BYTES)
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except _AliasFound as found:
        raise error(f"{what} {path} uses a YAML alias (*name) at line {found.mark.line + 1}; medsweep does not "
                    "expand aliases (a few nested ones grow to gigabytes): write the values out") from None
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(problem, "problem", None) or "invalid YAML"
        raise error(f"{what} {path} is not valid YAML{where}: {reason}; {hint}") from None
