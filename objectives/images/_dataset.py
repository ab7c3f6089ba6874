"""Image folders: scanning, fingerprinting, decoding once per size, and stratified splits.

Input is a folder of class subfolders (`TRAIN/<class>/<image>`), optionally with a separate
validation folder of the same classes; without one, a seeded stratified split is taken.
Files are recognised by content (`_formats`); every file that is not read is reported."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._errors import DataError
from .._text import is_utf8_name, shown_path
from ._disk_arrays import decode_to_disk, decoded_folder, fits_in_memory, index_digest, take_to_disk
from ._files import LabeledFiles
from ._formats import (GROUP_TAGS, OUTSIDE, Decoding, Unread, decode_image, decode_images, decode_workers,
                       dicom_group_ids, list_images, parse_window, refuse_unreadable, summarize_unread, unread_counts)
from ._grey_levels import IntensityReport
from ._manifest import read_manifest
from ._splits import assign_groups, grouped_folds, plan_splits

_CHECK_SIZE = 64  # decoding size of `create`'s check: enough pixels to count grey levels


def scan_image_folder(folder: str | os.PathLike[str], class_names: Sequence[str] | None = None,
                      *, role: str = "data") -> LabeledFiles:
    """List the readable images of each class subfolder (by content, not by file extension),
    and every other file with the reason it is not read."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"{role} folder {root} does not exist; pass a folder holding one subfolder per class")
    if not root.is_dir():
        raise DataError(f"{role} folder {root} is not a folder; pass a folder holding one subfolder per class")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    misnamed = [name for name in found if not is_utf8_name(name)]
    if misnamed:  # a class name is stored on the study and printed: it must be text
        raise DataError(f"class folder {shown_path(root / misnamed[0])} has a name that is not UTF-8; rename it "
                        f"(e.g. convmv -f latin1 -t utf8 --notest -r {shown_path(root)})")
    if not found:
        raise DataError(
            f"{role} folder {root} has no class subfolders; put each class's images in {root}/<class name>/"
        )
    if class_names is None:
        if len(found) < 2:
            raise DataError(
                f"{role} folder {root} has only one class ({found[0]!r}); a classifier needs at least two "
                "class subfolders"
            )
        class_names = found
    elif sorted(found) != sorted(class_names):
        raise DataError(
            f"{role} folder {root} has classes {found} but the training data has {list(class_names)}; "
            "use the same class subfolder names"
        )
    paths: list[Path] = []
    labels: list[int] = []
    unread: list[Unread] = []
    for label, name in enumerate(class_names):
        class_dir = root / name
        images, skipped = list_images(class_dir, root)
        unread.extend(skipped)
        if not images:
            detail = f" ({summarize_unread(skipped, root)})" if skipped else ""
            raise DataError(f"class folder {class_dir} holds no readable image{detail}; add images or remove it")
        paths.extend(images)
        labels.extend([label] * len(images))
    # Loose files beside the class folders are not images of any class: say so too.
    unread.extend(Unread(p, OUTSIDE) for p in sorted(root.iterdir())
                  if p.is_file() and not p.name.startswith("."))
    return LabeledFiles(tuple(class_names), tuple(paths), tuple(labels), tuple(unread))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_digests(paths: Sequence[Path]) -> list[str]:
    """SHA-256 of each file's bytes (threads: hashing releases the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(_file_digest, paths))


def _name_under(path: Path, root: Path) -> str:
    """`path` relative to `root`; absolute when a manifest names a file outside its folder."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def file_listing(parts: dict[str, LabeledFiles], roots: dict[str, Path],
                 digests: dict[str, list[str]]) -> dict[str, str]:
    """Each file's name (`part/relative path`) and a short content hash, to name changed files later."""
    return {f"{part}/{_name_under(path, roots[part])}": file_hash[:16]
            for part, files in parts.items() for path, file_hash in zip(files.paths, digests[part])}


def fingerprint_files(parts: dict[str, LabeledFiles], roots: dict[str, Path],
                      digests: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Class names, file count and a content hash over relative paths, labels and file bytes."""
    digest = hashlib.sha256()
    count = 0
    class_names: tuple[str, ...] = ()
    for part, files in parts.items():
        class_names = files.class_names
        file_hashes = (digests or {}).get(part) or file_digests(files.paths)
        for path, label, file_hash in zip(files.paths, files.labels, file_hashes):
            relative = _name_under(path, roots[part])
            digest.update(f"{part}\0{files.class_names[label]}\0{relative}\0{file_hash}\n".encode())
        count += len(files)
    return {"class_names": list(class_names), "file_count": count, "content_hash": digest.hexdigest()}


def stratified_split(labels: Sequence[int], validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/validation indices (scikit-learn's train_test_split)."""
    from sklearn.model_selection import train_test_split

    labels_array = np.asarray(labels)
    counts = np.bincount(labels_array)
    if counts.min() < 2:
        raise DataError(
            f"a class has only {counts.min()} image(s); a stratified split needs at least 2 per class "
            "(add images or pass a separate validation folder)"
        )
    n_classes = len(counts)
    n_val = max(n_classes, int(round(validation_fraction * len(labels_array))))
    if len(labels_array) - n_val < n_classes:
        raise DataError(
            f"validation fraction {validation_fraction} leaves too few training images; lower it"
        )
    indices = np.arange(len(labels_array))
    train, val = train_test_split(indices, test_size=n_val, stratify=labels_array, random_state=seed)
    return np.sort(train), np.sort(val)


@dataclass(frozen=True)
class DataSpec:
    """Where a study's images live and how they are split; stored on the study, so a worker
    elsewhere rebuilds exactly the same locked test split, validation split and CV folds.

    `manifest` (a CSV of path,label[,group]) replaces the class folders of `data_dir`;
    `group_pattern` takes group ids from file names; identical files always share a group.
    `cv` > 0 cross-validates with `cv` folds and `repeats` repeats instead of one split;
    `test_fraction` or `test_dir` lock a test set that no trial sees. `group_by` names a DICOM
    header tag (PatientID, ...) whose value is a group too; `window` (center, width) fixes the
    grayscale window for every image; `skip_unreadable` trains on the readable files even when
    more than `MAX_UNREADABLE_SHARE` of them cannot be read."""

    data_dir: str
    val_dir: str | None = None
    validation_fraction: float = 0.2
    split_seed: int = 0
    manifest: str | None = None
    group_pattern: str | None = None
    cv: int = 0
    repeats: int = 1
    test_fraction: float = 0.0
    test_dir: str | None = None
    group_by: str | None = None
    window: tuple[float, float] | None = None
    skip_unreadable: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", parse_window(self.window))
        if self.group_by is not None:
            if self.group_by not in GROUP_TAGS:
                raise DataError(f"--group-by {self.group_by!r} is not a DICOM grouping tag; use one of "
                                f"{', '.join(GROUP_TAGS)}")
        if not 0 < self.validation_fraction < 1:
            raise DataError(
                f"validation fraction must be between 0 and 1, got {self.validation_fraction}"
            )
        if self.cv == 1 or self.cv < 0:
            raise DataError(f"--cv must be 0 (one validation split) or at least 2 folds, got {self.cv}")
        if self.repeats < 1:
            raise DataError(f"--repeats must be at least 1, got {self.repeats}")
        if self.repeats > 1 and not self.cv:
            raise DataError(f"--repeats {self.repeats} needs cross-validation; add --cv K (e.g. --cv 5)")
        if self.cv and self.val_dir:
            raise DataError("--cv and --val-dir exclude each other; cross-validation makes its own validation folds")
        if not 0 <= self.test_fraction <= 0.5:
            raise DataError(f"test fraction must be between 0 and 0.5, got {self.test_fraction}")
        if self.test_fraction and self.test_dir:
            raise DataError("--test-fraction and --test-dir exclude each other; lock the test set one way")

    def to_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _SPEC_FIELDS}
        values["window"] = list(self.window) if self.window else None  # YAML and JSON both take lists
        return values

    @staticmethod
    def reading_options(values: dict[str, Any]) -> dict[str, Any]:
        """The options of a stored spec that say how to read images (for retraining on other data)."""
        return {k: values[k] for k in ("window", "skip_unreadable") if values.get(k) is not None}

    @property
    def decoding(self) -> Decoding:
        return Decoding(self.window)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataSpec":
        return cls(**{k: values[k] for k in _SPEC_FIELDS if k in values})

    @property
    def has_test_split(self) -> bool:
        return bool(self.test_fraction or self.test_dir)


_SPEC_FIELDS = ("data_dir", "val_dir", "validation_fraction", "split_seed", "manifest", "group_pattern",
                "cv", "repeats", "test_fraction", "test_dir", "group_by", "window", "skip_unreadable")


@dataclass(frozen=True)
class TrialData:
    """Decoded, split arrays for one image size: uint8 images, integer labels."""

    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ImageDataset:
    """A scanned data spec: file lists, fingerprint, groups and splits, and decoded arrays
    cached per image size. `train_files` are all the images of `data_dir` (or the manifest),
    including any locked as test; `plan` says which are which."""

    spec: DataSpec
    train_files: LabeledFiles
    val_files: LabeledFiles | None
    fingerprint: dict[str, Any]
    plan: Any = None  # SplitPlan; built by `open`
    test_files: LabeledFiles | None = None
    file_hashes: dict[str, str] = field(default_factory=dict, repr=False)  # see `file_listing`
    unread: tuple[Unread, ...] = ()
    roots: tuple[Path, ...] = ()
    _cache: dict[int, TrialData] = field(default_factory=dict, repr=False)
    _decoded: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, spec: DataSpec) -> "ImageDataset":
        declared = None
        if spec.manifest:
            train, declared = read_manifest(spec.manifest)
            train_root = Path(spec.manifest).expanduser().parent
        else:
            train = scan_image_folder(spec.data_dir, role="data")
            train_root = Path(spec.data_dir).expanduser()
        parts = {"train": train}
        roots = {"train": train_root}
        digests = {"train": file_digests(train.paths)}
        unread = list(train.unread)
        val = test = None
        if spec.val_dir:
            val = scan_image_folder(spec.val_dir, train.class_names, role="validation")
            parts["val"], roots["val"] = val, Path(spec.val_dir).expanduser()
            digests["val"] = file_digests(val.paths)
            unread.extend(val.unread)
        if spec.test_dir:
            test = scan_image_folder(spec.test_dir, train.class_names, role="test")
            parts["test"], roots["test"] = test, Path(spec.test_dir).expanduser()
            digests["test"] = file_digests(test.paths)
            unread.extend(test.unread)
        if not spec.skip_unreadable:
            refuse_unreadable(sum(len(f) for f in parts.values()), unread, spec.manifest or spec.data_dir,
                              train_root)
        _refuse_shared_images(parts, digests)
        tags = dicom_group_ids(train.paths, spec.group_by) if spec.group_by else None
        groups = assign_groups(train.paths, train.labels, digests["train"], declared=declared,
                               pattern=spec.group_pattern, tags=tags, tag_name=spec.group_by)
        plan = plan_splits(train.labels, groups, train.class_names, test_fraction=spec.test_fraction,
                           validation_fraction=spec.validation_fraction, cv=spec.cv, repeats=spec.repeats,
                           seed=spec.split_seed, separate_validation=val is not None)
        fingerprint = fingerprint_files(parts, roots, digests)
        # How pixels were derived travels with the fingerprint into the study, export and model,
        # so train, predict and evaluate decode by the same rule; the files not read, by count.
        fingerprint["decoding"] = spec.decoding.to_dict()
        fingerprint["unread"] = unread_counts(unread)
        return cls(spec, train, val, fingerprint, plan, test, file_listing(parts, roots, digests),
                   unread=tuple(unread), roots=tuple(roots.values()))

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train_files.class_names

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.train_files.labels, dtype=np.int64)

    def unread_report(self) -> str | None:
        """`not read: N files (count per reason, first examples)`, or None when every file was read."""
        if not self.unread:
            return None
        root = self.roots[0] if self.roots else None
        return f"not read: {len(self.unread)} file(s): {summarize_unread(self.unread, root)}"

    def check_decodable(self) -> "IntensityReport":
        """Decode every image once (with the study's decoding), so damaged files are reported up
        front, all at once, and measure each one's grey-level range on the way (at 64 px, a few
        hundred images at a time)."""
        failures: list[str] = []

        def attempt(path: Path) -> np.ndarray | None:
            try:
                return decode_image(path, _CHECK_SIZE, self.spec.decoding)
            except DataError as error:
                failures.append(str(error))
                return None

        report = IntensityReport(0)
        with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
            for files in (self.train_files, self.val_files, self.test_files):
                if files is None:
                    continue
                for start in range(0, len(files.paths), 256):
                    chunk = files.paths[start:start + 256]
                    decoded = [(p, image) for p, image in zip(chunk, pool.map(attempt, chunk)) if image is not None]
                    if decoded:
                        report += IntensityReport.measure([p for p, _ in decoded],
                                                          np.stack([image for _, image in decoded]))
        if failures:
            failures.sort()
            more = f" (and {len(failures) - 1} more file(s) that cannot be decoded)" if len(failures) > 1 else ""
            raise DataError(failures[0] + more)
        return report

    def _decode(self, paths: Sequence[Path], image_size: int, part: str) -> np.ndarray:
        """Decoded images in memory, or memory-mapped from disk above the memory budget."""
        if fits_in_memory(len(paths), image_size):
            return decode_images(paths, image_size, self.spec.decoding)
        # Keyed on the decoding settings too: a changed window never reads stale pixels.
        name = f"{self.fingerprint['content_hash'][:16]}-{self.spec.decoding.key()}-{image_size}-{part}.npy"
        return decode_to_disk(paths, image_size, decoded_folder() / name, self.spec.decoding)

    def _take(self, images: np.ndarray, index: np.ndarray) -> np.ndarray:
        """`images[index]`; for images on disk, a contiguous file of its own."""
        if not isinstance(images, np.memmap):
            return images[index]
        name = (f"{self.fingerprint['content_hash'][:16]}-{self.spec.decoding.key()}-{images.shape[1]}-rows-"
                f"{index_digest(index)}.npy")
        return take_to_disk(images, index, decoded_folder() / name)

    def _images(self, image_size: int) -> np.ndarray:
        if image_size not in self._decoded:
            self._decoded[image_size] = self._decode(self.train_files.paths, image_size, "train")
        return self._decoded[image_size]

    def _subset(self, image_size: int, train_index: np.ndarray, val_index: np.ndarray) -> TrialData:
        images, labels = self._images(image_size), self.labels
        return TrialData(self.class_names, self._take(images, train_index), labels[train_index],
                         self._take(images, val_index), labels[val_index])

    def arrays(self, image_size: int) -> TrialData:
        """Decode and split once per image size; later trials reuse the arrays in memory.
        With cross-validation this is the first fold."""
        if image_size not in self._cache:
            if self.val_files is not None:
                images = self._take(self._images(image_size), self.plan.development)
                labels = self.labels[self.plan.development]
                x_val = self._decode(self.val_files.paths, image_size, "val")
                y_val = np.asarray(self.val_files.labels, dtype=np.int64)
                data = TrialData(self.class_names, images, labels, x_val, y_val)
            elif self.plan.validation is not None:
                data = self._subset(image_size, *self.plan.validation)
            else:
                data = self._subset(image_size, *self.plan.folds[0])
            self._cache[image_size] = data
        return self._cache[image_size]

    def folds(self, image_size: int) -> Iterator[TrialData]:
        """Each cross-validation fold's train/validation arrays, in order (repeat by repeat)."""
        for train_index, val_index in self.plan.folds:
            yield self._subset(image_size, train_index, val_index)

    @property
    def fold_count(self) -> int:
        return len(self.plan.folds)

    def member_folds(self, image_size: int, k: int, seed: int = 0) -> list[TrialData]:
        """K folds of the images a final model trains on (`all_arrays`), for a fold ensemble (as
        nnU-Net's five fold models): the study's own cross-validation folds when it has K of
        them, else K grouped, stratified folds, so identical images stay in one fold."""
        if self.plan.folds and len(self.plan.folds) == k and self.plan.repeats == 1:
            return list(self.folds(image_size))
        development = self.plan.development
        labels = self.labels[development]
        folds = grouped_folds(labels, self.plan.groups.ids[development], k, seed, self.class_names)
        images = self._take(self._images(image_size), development)
        return [TrialData(self.class_names, self._take(images, train), labels[train], self._take(images, val),
                          labels[val]) for train, val in folds]

    def test_arrays(self, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The locked test images (empty when the study has no test split)."""
        if self.test_files is not None:
            return (self._decode(self.test_files.paths, image_size, "test"),
                    np.asarray(self.test_files.labels, dtype=np.int64))
        return self._take(self._images(image_size), self.plan.test), self.labels[self.plan.test]

    def all_arrays(self, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Every image available to search (never the locked test ones), for a final model."""
        development = self.plan.development
        return self._take(self._images(image_size), development), self.labels[development]


def _refuse_shared_images(parts: dict[str, LabeledFiles], digests: dict[str, list[str]]) -> None:
    """An image that sits both in the training data and a separate validation or test folder
    would leak; name the first one."""
    if len(parts) < 2:
        return
    owner: dict[str, tuple[str, Path]] = {}
    for part, files in parts.items():
        for path, digest in zip(files.paths, digests[part]):
            first = owner.setdefault(digest, (part, path))
            if first[0] != part:
                raise DataError(
                    f"{path} ({part}) is identical to {first[1]} ({first[0]}); the same image in two "
                    "splits leaks; remove one of the copies"
                )
