"""CSV manifests: `path,label[,group]` rows (an optional header row naming those columns) as
an input besides class folders. Relative paths are read from the manifest's own folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .._errors import DataError
from .._text import read_text_file
from ._files import LabeledFiles
from ._formats import Unread, check_file

_HEADER = ("path", "label", "group")


def read_manifest(manifest: str | os.PathLike[str], class_names: tuple[str, ...] | None = None
                  ) -> tuple[LabeledFiles, list[str | None] | None]:
    """The manifest's files with labels (class names sorted, as for folders) and its groups
    (None when the manifest has no group column). Rows whose file cannot be read are left out and
    listed in the files' `unread`, like stray files in a class folder."""
    path = Path(manifest).expanduser()
    text = read_text_file(path, "manifest", "pass a CSV of path,label[,group] rows", DataError,
                          max_bytes=1 << 30)
    rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
    if rows and tuple(cell.strip().lower() for cell in rows[0]) in (_HEADER[:2], _HEADER):
        rows = rows[1:]
    if not rows:
        raise DataError(f"manifest {path} lists no images; write one path,label[,group] row per image")
    widths = {len(row) for row in rows}
    if not widths <= {2, 3} or len(widths) != 1:
        line = next(i for i, row in enumerate(rows, 1) if len(row) != len(rows[0]) or len(row) not in (2, 3))
        raise DataError(
            f"manifest {path} row {line} has {len(rows[line - 1])} columns; every row needs path,label or "
            "path,label,group"
        )
    root = path.parent
    entries: list[tuple[Path, str, str | None]] = []
    seen: set[Path] = set()
    unread: list[Unread] = []
    for number, row in enumerate(rows, 1):
        file_name, label = row[0].strip(), row[1].strip()
        if not file_name or not label:
            raise DataError(f"manifest {path} row {number} has an empty path or label; fill both in")
        file_path = Path(file_name).expanduser()
        file_path = file_path if file_path.is_absolute() else root / file_path
        if not file_path.is_file():
            raise DataError(f"manifest {path} row {number}: image {file_path} does not exist; fix the path")
        if file_path in seen:
            raise DataError(f"manifest {path} lists {file_path} twice; keep one row per image")
        seen.add(file_path)
        problem = check_file(file_path)
        if problem is not None:
            unread.append(problem)
            continue
        group = row[2].strip() if len(row) == 3 else None
        entries.append((file_path, label, group or None))
    if not entries:
        raise DataError(f"manifest {path} lists no readable image ({len(unread)} row(s) name files that cannot be "
                        "read, e.g. " + "; ".join(f"{u.path}: {u.detail or u.reason}" for u in unread[:2]) + ")")
    found = sorted({label for _, label, _ in entries})
    if class_names is None:
        if len(found) < 2:
            raise DataError(f"manifest {path} has only one class ({found[0]!r}); a classifier needs at least two")
        class_names = tuple(found)
    elif not set(found) <= set(class_names):
        extra = sorted(set(found) - set(class_names))
        raise DataError(f"manifest {path} has classes {extra} the training data lacks; use the same labels")
    index = {name: i for i, name in enumerate(class_names)}
    entries.sort(key=lambda entry: (index[entry[1]], str(entry[0])))
    files = LabeledFiles(tuple(class_names), tuple(e[0] for e in entries), tuple(index[e[1]] for e in entries),
                         tuple(unread))
    groups = [e[2] for e in entries] if len(rows[0]) == 3 else None
    return files, groups
