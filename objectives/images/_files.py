"""A labelled list of image files: what scanning a class-folder tree or reading a manifest gives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ._formats import Unread


@dataclass(frozen=True)
class LabeledFiles:
    """Image files with integer labels indexing `class_names` (sorted folder names), and the
    files that were found but not read (`unread`, with the reason)."""

    class_names: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    unread: tuple[Unread, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: "Sequence[int]") -> "LabeledFiles":
        """Only the files at `indices` (e.g. the images a model never saw)."""
        return LabeledFiles(self.class_names, tuple(self.paths[i] for i in indices),
                            tuple(self.labels[i] for i in indices))
