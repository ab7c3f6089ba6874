"""A study's data: the DataSpec built from `create`'s and `paper`'s options (absolute paths,
stored on the study for workers elsewhere) and the one-line description of what was found."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medsweep.objectives.images import DataSpec, ImageDataset

from .._errors import MedsweepError, StudyError


def resolved_path(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


# The DataSpec fields that hold paths.
PATH_FIELDS = ("data_dir", "val_dir", "test_dir", "manifest")


def absolute_spec(spec: DataSpec) -> DataSpec:
    """The same spec with absolute paths, resolved against this process's folder: what a study
    stores, so a worker, `status` or `export` started in another folder finds the same images."""
    return replace(spec, **{name: resolved_path(getattr(spec, name)) or getattr(spec, name) for name in PATH_FIELDS})


def check_stored_paths(spec: DataSpec, study: str) -> None:
    """Name the way out when a study created before paths were stored absolute holds a relative
    one that this folder does not have (it was relative to the folder `create` ran in)."""
    for name in PATH_FIELDS:
        value = getattr(spec, name)
        if value and not Path(value).expanduser().is_absolute() and not Path(value).exists():
            raise StudyError(
                f"study {study!r} stored the relative path {value!r} (created before medsweep stored absolute "
                f"paths), and {Path.cwd()} has no such path; run this command in the folder the study was "
                "created in, or pass --data with the data's path"
            )


def make_data_spec(data_dir: str | None, *, manifest: str | None = None, val_dir: str | None = None,
                   validation_fraction: float = 0.2, split_seed: int = 0, group_pattern: str | None = None,
                   cv: int = 0, repeats: int = 1, test_fraction: float = 0.0,
                   test_dir: str | None = None, group_by: str | None = None, window: str | None = None,
                   skip_unreadable: bool = False) -> DataSpec:
    """A DataSpec with absolute paths (stored on the study, read by workers elsewhere)."""
    if not data_dir and not manifest:
        raise MedsweepError("pass --data FOLDER (class subfolders) or --manifest FILE.csv (path,label[,group] rows)")
    if data_dir and manifest:
        raise MedsweepError("pass either --data or --manifest, not both; a manifest names its own image paths")
    if manifest:
        data_dir = str(Path(manifest).expanduser().resolve().parent)
    return DataSpec(resolved_path(data_dir) or "", resolved_path(val_dir), validation_fraction, split_seed,
                    manifest=resolved_path(manifest), group_pattern=group_pattern, cv=cv, repeats=repeats,
                    test_fraction=test_fraction, test_dir=resolved_path(test_dir), group_by=group_by,
                    window=window, skip_unreadable=skip_unreadable)


def describe_dataset(dataset: ImageDataset) -> str:
    """What `medsweep create` found: images, classes, duplicates and groups, splits, the window,
    and (on a line of its own) every file it did not read."""
    fingerprint = dataset.fingerprint
    plan = dataset.plan
    window = f"; window {dataset.spec.window[0]:g},{dataset.spec.window[1]:g}" if dataset.spec.window else ""
    text = (f"{fingerprint['file_count']} images, classes {', '.join(fingerprint['class_names'])}; "
            f"{plan.groups.describe()}; {plan.describe()}{window}")
    unread = dataset.unread_report()
    return f"{text}\n{unread}" if unread else text
