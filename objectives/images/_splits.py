"""Leakage-safe splits: image groups (a manifest column, a file-name pattern, a DICOM header
tag such as PatientID, and always identical file content), a locked test split, and grouped stratified train/validation splits
and (repeated) k-fold cross-validation, all from scikit-learn's splitters.

Every index returned here points into the scanned file list, so a caller (or a test) can check
directly that no group ever straddles train, validation and test."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._errors import DataError


@dataclass(frozen=True)
class GroupReport:
    """One integer group id per file, and what `medsweep create` reports about them."""

    ids: np.ndarray
    group_count: int
    duplicate_sets: int  # distinct contents that occur in more than one file
    duplicate_files: int  # files beyond the first copy of each such content
    mixed_label_groups: int  # groups whose images carry more than one class
    unmatched: int  # files the group pattern did not match (each its own group)
    tag_name: str | None = None  # the DICOM tag grouping images (`--group-by`), if any
    tagged_groups: int = 0  # distinct (hashed) values of that tag
    untagged: int = 0  # files without that tag (not DICOM, or the tag empty): each its own group

    @property
    def all_singletons(self) -> bool:
        return self.group_count == len(self.ids)

    def describe(self) -> str:
        text = (f"{self.group_count} groups; {self.duplicate_files} duplicate file(s) in "
                f"{self.duplicate_sets} set(s) of identical images kept together")
        if self.mixed_label_groups:
            text += f"; {self.mixed_label_groups} group(s) hold more than one class"
        if self.unmatched:
            text += f"; {self.unmatched} file name(s) did not match the group pattern (each its own group)"
        if self.tag_name:
            text += f"; {self.tagged_groups} distinct {self.tag_name} value(s) from the DICOM headers"
            if self.untagged:
                text += f", {self.untagged} file(s) without {self.tag_name} (each its own group)"
        return text


def assign_groups(paths: Sequence[Path], labels: Sequence[int], digests: Sequence[str], *,
                  declared: Sequence[str | None] | None = None, pattern: str | None = None,
                  tags: Sequence[str | None] | None = None, tag_name: str | None = None) -> GroupReport:
    """Group files that share content (always), a declared group, the pattern's match, or a
    DICOM tag's (hashed) value.

    Groups are the connected components of those relations, so a patient whose images
    include a duplicate of another patient's image joins both into one group."""
    count = len(paths)
    parent = list(range(count))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_holder: dict[tuple[str, str], int] = {}

    def join(key: tuple[str, str], index: int) -> None:
        holder = first_holder.setdefault(key, index)
        parent[find(index)] = find(holder)

    compiled = _compile_pattern(pattern) if pattern else None
    unmatched = 0
    for index in range(count):
        join(("content", digests[index]), index)
        if declared is not None and declared[index]:
            join(("declared", str(declared[index])), index)
        if tags is not None and tags[index]:
            join(("tag", str(tags[index])), index)
        if compiled is not None:
            match = compiled.search(Path(paths[index]).name)
            if match is None:
                unmatched += 1
            else:
                join(("pattern", match.group(1) if compiled.groups else match.group(0)), index)
    roots = [find(i) for i in range(count)]
    _, ids = np.unique(np.asarray(roots), return_inverse=True)
    copies: dict[str, int] = {}
    for digest in digests:
        copies[digest] = copies.get(digest, 0) + 1
    label_array = np.asarray(labels)
    mixed = sum(1 for g in np.unique(ids) if len(np.unique(label_array[ids == g])) > 1)
    return GroupReport(
        ids=ids.astype(np.int64),
        group_count=int(ids.max() + 1) if count else 0,
        duplicate_sets=sum(1 for n in copies.values() if n > 1),
        duplicate_files=sum(n - 1 for n in copies.values() if n > 1),
        mixed_label_groups=int(mixed),
        unmatched=unmatched,
        tag_name=tag_name if tags is not None else None,
        tagged_groups=len({t for t in tags if t}) if tags is not None else 0,
        untagged=sum(1 for t in tags if not t) if tags is not None else 0,
    )


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise DataError(f"group pattern {pattern!r} is not a valid regular expression ({error}); fix --group-pattern") from None
    if compiled.groups > 1:
        raise DataError(
            f"group pattern {pattern!r} has {compiled.groups} capture groups; use one, around the group id "
            r"(e.g. '^(P\d+)_')"
        )
    return compiled


def _check_groups_per_class(labels: np.ndarray, groups: np.ndarray, needed: int, what: str,
                            class_names: Sequence[str]) -> None:
    for label in np.unique(labels):
        distinct = len(np.unique(groups[labels == label]))
        if distinct < needed:
            raise DataError(
                f"class {class_names[label]!r} has only {distinct} independent image group(s) in the data "
                f"available for {what}, which needs at least {needed}; add images or {_fix_for(what)}"
            )


def _fix_for(what: str) -> str:
    if what.startswith("--cv"):
        return "lower --cv"
    if what.endswith(" folds"):
        return "ask for fewer ensemble members (--ensemble)"
    if what.startswith("the test"):
        return "lower --test-fraction"
    return "pass a separate --val-dir"


def _grouped_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
                     all_singletons: bool) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (by class) hold-out of about `fraction` that keeps groups whole.

    Ungrouped data uses train_test_split's exact fraction; grouped data takes one fold of a
    StratifiedGroupKFold with round(1 / fraction) folds (so the share is rounded to 1/k)."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    indices = np.arange(len(labels))
    if all_singletons:
        n_classes = len(np.unique(labels))
        n_held = max(n_classes, int(round(fraction * len(labels))))
        if len(labels) - n_held < n_classes:
            raise DataError(f"a hold-out fraction of {fraction} leaves too few images to train on; lower it")
        keep, held = train_test_split(indices, test_size=n_held, stratify=labels, random_state=seed)
        return np.sort(keep), np.sort(held)
    # scikit-learn refuses more folds than the smallest class has images (tiny data sets).
    n_splits = max(2, min(int(round(1.0 / fraction)), int(np.unique(labels, return_counts=True)[1].min())))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = next(splitter.split(indices, labels, groups))
    return np.sort(keep), np.sort(held)


@dataclass(frozen=True)
class SplitPlan:
    """Which scanned files are locked as test, the single validation split, and the CV folds.

    All arrays are indices into the scanned file list. `validation` is None with cross-validation
    or a separate validation folder; `folds` is empty without cross-validation."""

    groups: GroupReport
    development: np.ndarray
    test: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]
    repeats: int = 1

    def describe(self) -> str:
        parts = [f"{len(self.development)} images for search"]
        if len(self.test):
            parts.append(f"{len(self.test)} locked as test")
        if self.folds:
            k = len(self.folds) // self.repeats
            parts.append(f"{k}-fold cross-validation x {self.repeats} repeat(s)")
        return ", ".join(parts)


def plan_splits(labels: Sequence[int], groups: GroupReport, class_names: Sequence[str], *,
                test_fraction: float = 0.0, validation_fraction: float = 0.2, cv: int = 0,
                repeats: int = 1, seed: int = 0, separate_validation: bool = False) -> SplitPlan:
    """Lock the test split first (seeded, grouped, stratified), then split the rest for search."""
    label_array = np.asarray(labels, dtype=np.int64)
    ids = groups.ids
    everything = np.arange(len(label_array))
    if test_fraction > 0:
        _check_groups_per_class(label_array, ids, 2, "the test split and search", class_names)
        keep, held = _grouped_holdout(label_array, ids, test_fraction, seed + 10_007, groups.all_singletons)
        development, test = everything[keep], everything[held]
    else:
        development, test = everything, everything[:0]
    dev_labels, dev_groups = label_array[development], ids[development]
    singletons = len(np.unique(dev_groups)) == len(dev_groups)
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    validation = None
    if cv:
        _check_groups_per_class(dev_labels, dev_groups, cv, f"--cv {cv}", class_names)
        for train, val in _cv_indices(dev_labels, dev_groups, cv, repeats, seed, singletons):
            folds.append((development[np.sort(train)], development[np.sort(val)]))
    elif not separate_validation:
        _check_groups_per_class(dev_labels, dev_groups, 2, "a validation split", class_names)
        keep, held = _grouped_holdout(dev_labels, dev_groups, validation_fraction, seed, singletons)
        validation = (development[keep], development[held])
    return SplitPlan(groups, development, test, validation, tuple(folds), repeats if cv else 1)


def grouped_folds(labels: Sequence[int], group_ids: Sequence[Any], k: int, seed: int = 0,
                  class_names: Sequence[str] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified folds (train, validation index arrays) that keep each group in one fold."""
    label_array, ids = np.asarray(labels, dtype=np.int64), np.asarray(group_ids)
    names = list(class_names) or [str(c) for c in sorted(set(label_array.tolist()))]
    _check_groups_per_class(label_array, ids, k, f"{k} folds", names)
    singletons = len(np.unique(ids)) == len(ids)
    return [(np.sort(train), np.sort(val)) for train, val in _cv_indices(label_array, ids, k, 1, seed, singletons)]


def _cv_indices(labels: np.ndarray, groups: np.ndarray, k: int, repeats: int, seed: int,
                singletons: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """RepeatedStratifiedKFold when every image is its own group, otherwise one shuffled
    StratifiedGroupKFold per repeat (scikit-learn has no repeated grouped splitter)."""
    from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedGroupKFold

    placeholder = np.zeros(len(labels))
    if singletons:
        splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
        return list(splitter.split(placeholder, labels))
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    for repeat in range(repeats):
        grouped = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + repeat)
        folds.extend(grouped.split(placeholder, labels, groups))
    return folds
