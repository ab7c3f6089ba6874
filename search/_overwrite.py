"""What a command may write over: one rule for every file a command writes.

A command checks all its output paths before doing any work (`check_outputs`):
- a path that is the study's own SQLite database, or a file the command reads, is refused always,
  even with --force (compared by resolved path and by file identity);
- a new path is written;
- an existing file that is recognisably the same command's earlier output of the same kind (an
  export YAML with its `medsweep_export` key, a .keras model with medsweep.json inside, a model
  card, a medsweep HTML report, a PNG carrying medsweep's mark for that figure) is replaced, and
  the command says so ("replacing earlier export best.yaml"), unless it records the locked test's
  one measurement (an export or model written by `train --final`): that needs --force, because
  nothing can measure the test set afresh;
- any other existing file is refused unless the user passes --force.
`medsweep demo` applies the same rule to its whole work folder (`check_demo_workdir`): a folder
holding anything an earlier demo did not create is refused unless --force, and a database the
demo did not create is never replaced."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from medsweep.objectives.evaluation import OVERLAY_PNG_KIND
from medsweep.objectives.metrics import RELIABILITY_PNG_KIND

from ._errors import MedsweepError

DEMO_MARKER = ".medsweep-demo"
_SNIFF_BYTES = 4096


class OutputError(MedsweepError):
    """An output path that would destroy something: a foreign file (without --force), the study's
    database or one of the command's own inputs."""


@dataclass(frozen=True)
class OutputKind:
    """A kind of file medsweep writes, and how to recognise an earlier one."""

    name: str
    recognise: Callable[[Path], bool]
    plural: str = ""
    # What an earlier output of this kind may hold that nothing can measure again (the locked
    # test's one measurement), or None: such a file is replaced only with --force.
    holds_record: Callable[[Path], str | None] = lambda path: None

    def many(self) -> str:
        return self.plural or self.name + "s"


@dataclass(frozen=True)
class Protected:
    """A path no command writes over, even with --force, and what it is."""

    path: Path
    what: str


def _head(path: Path, size: int = _SNIFF_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(size).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _is_export(path: Path) -> bool:
    from ._yaml import load_yaml_file

    try:
        # The no-alias reader: a file in the way may be anything, a YAML alias bomb included.
        document = load_yaml_file(path, "file", "", ValueError)
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "medsweep_export" in document


def _measured_test(document: object) -> str | None:
    """The locked test measurement a document (an export, a model's metadata) records, named."""
    if not isinstance(document, dict):
        return None
    for key, what in (("test", "the locked test measured by `train --final`"),
                      ("ensemble_test", "the locked test measured by `train --final --ensemble`")):
        section = document.get(key)
        if isinstance(section, dict) and section.get("measured"):
            return f"{what} at {section.get('measured_at', 'an unrecorded time')}"
    return None


def _export_record(path: Path) -> str | None:
    from ._yaml import load_yaml_file

    try:
        return _measured_test(load_yaml_file(path, "file", "", ValueError))
    except (OSError, ValueError):
        return None


def _model_record(path: Path) -> str | None:
    from medsweep.objectives import ObjectiveError
    from medsweep.objectives.model import read_model_metadata

    try:
        return _measured_test(read_model_metadata(path))
    except (ObjectiveError, OSError):
        return None


def _is_model(path: Path) -> bool:
    from medsweep.objectives import ObjectiveError
    from medsweep.objectives.model import read_model_metadata

    try:
        read_model_metadata(path)
    except (ObjectiveError, OSError):
        return False
    return True


def _is_model_card(path: Path) -> bool:
    head = _head(path)
    return head.startswith("# Model card") and "Written by `medsweep train --final`" in head


# The <meta> every report carries; reports written before it are recognised by their title.
REPORT_GENERATOR = '<meta name="generator" content="medsweep report">'


def _is_report(path: Path) -> bool:
    head = _head(path)
    return REPORT_GENERATOR in head or "<title>medsweep report: " in head


def _png_of(kind: str) -> Callable[[Path], bool]:
    def recognise(path: Path) -> bool:
        from medsweep.objectives.metrics import png_kind

        return png_kind(path) == kind

    return recognise


def _png_kind(kind: str, plural: str = "") -> OutputKind:
    return OutputKind(kind, _png_of(kind), plural)


EXPORT = OutputKind("export", _is_export, holds_record=_export_record)
MODEL = OutputKind("model", _is_model, holds_record=_model_record)
MODEL_CARD = OutputKind("model card", _is_model_card)
REPORT = OutputKind("report", _is_report)
# The PNG kinds are the marks their writers put inside them (objectives.metrics.png_mark).
RELIABILITY_PNG = _png_kind(RELIABILITY_PNG_KIND)
OVERLAY_PNG = _png_kind(OVERLAY_PNG_KIND)
REPORT_FIGURE_PNG = _png_kind("report figure")


def study_database(storage_url: str | None, what: str = "the study's database") -> list[Protected]:
    """The SQLite file of `storage_url` (None: $MEDSWEEP_STORAGE or the default), if it is one."""
    from medsweep.storage import sqlite_file

    path = sqlite_file(storage_url)
    return [Protected(path, f"{what} ({path.name})")] if path is not None else []


def inputs(paths: Iterable[str | Path | None], what: str) -> list[Protected]:
    """Files the command reads: never its outputs."""
    return [Protected(Path(p).expanduser(), what) for p in paths if p]


def _same_file(first: Path, second: Path) -> bool:
    if first.expanduser().resolve() == second.expanduser().resolve():
        return True
    try:
        return os.path.samefile(first, second)  # hard links, bind mounts
    except OSError:
        return False


def check_outputs(outputs: Sequence[tuple[str | Path, OutputKind]], *, option: str, force: bool,
                  protected: Sequence[Protected] = ()) -> list[str]:
    """Refuse the outputs the rule forbids (see the module docstring), before any work; return
    the notes to print about the files that will be replaced."""
    replaced: dict[str, list[Path]] = {}
    forced: list[Path] = []
    foreign: list[tuple[Path, OutputKind]] = []
    kinds: dict[str, OutputKind] = {}
    for raw, kind in outputs:
        path = Path(raw).expanduser()
        for guarded in protected:
            if _same_file(path, guarded.path):
                raise OutputError(f"{option} {path} is {guarded.what}; writing there would destroy it, so it is "
                                  f"refused even with --force; choose another {option}")
        if not path.exists():
            continue
        if path.is_dir():
            raise OutputError(f"{option}: {path} is a folder where the {kind.name} goes; move it or choose another {option}")
        if kind.recognise(path):
            record = kind.holds_record(path)
            if record and not force:
                raise OutputError(f"{option}: {path} is an earlier medsweep {kind.name} that records {record}; "
                                  f"replacing it would lose that record and allow a second look at the test set; "
                                  f"pass --force to replace it, or choose another {option}")
            if record:
                forced.append(path)
            else:
                replaced.setdefault(kind.name, []).append(path)
            kinds[kind.name] = kind
        elif force:
            forced.append(path)
        else:
            foreign.append((path, kind))
    if foreign:
        path, kind = foreign[0]
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"{option}: {path} exists and is not an earlier medsweep {kind.name}{more}; pass --force to "
                          f"replace it, or choose another {option}")
    notes = []
    for name, paths in replaced.items():
        if len(paths) == 1:
            notes.append(f"replacing earlier {name} {paths[0]}")
        else:
            folders = {p.parent for p in paths}
            where = f" in {folders.pop()}" if len(folders) == 1 else ""
            notes.append(f"replacing {len(paths)} earlier {kinds[name].many()}{where}")
    if forced:
        shown = ", ".join(str(p) for p in forced[:3]) + (f" and {len(forced) - 3} more" if len(forced) > 3 else "")
        notes.append(f"replacing {shown} (--force)")
    return notes


def check_demo_workdir(workdir: Path, *, force: bool, own_database: bool) -> str | None:
    """Refuse a demo folder that holds files an earlier demo did not create (unless --force), and
    never let the demo replace a database it did not create (`own_database`: the demo keeps its
    study in WORKDIR/medsweep.db). Returns a note when the folder is reused."""
    workdir = workdir.expanduser()
    if not workdir.exists():
        return None
    if not workdir.is_dir():
        raise OutputError(f"--workdir {workdir} is a file; pass a folder for the demo, e.g. medsweep-demo")
    entries = sorted(p.name for p in workdir.iterdir())
    if not entries:
        return None
    if DEMO_MARKER in entries:
        return f"replacing the earlier demo in {workdir}"
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    if not force:
        raise OutputError(f"--workdir {workdir} holds files an earlier demo did not create ({shown}); the demo would "
                          "write over them; choose a new folder (the default is medsweep-demo), or pass --force")
    database = workdir / "medsweep.db"
    if own_database and database.exists():
        raise OutputError(f"--workdir {workdir} holds medsweep.db, a database the demo did not create; it is never "
                          "replaced, even with --force; choose another --workdir")
    return f"writing the demo into {workdir}, which holds other files ({shown}; --force)"


def mark_demo_workdir(workdir: Path) -> None:
    """The marker that lets the next demo reuse this folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text("This folder was written by `medsweep demo`; the next demo run replaces it.\n")
