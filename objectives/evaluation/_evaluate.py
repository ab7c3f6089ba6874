"""Measuring a saved model on labelled images: every metric with a bootstrap 95% interval,
the sensitivity/specificity at the threshold stored with the model (if any), the reliability
diagram, and how many of the images trained or selected the model (by content hash)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from ..images import (LabeledFiles, decode_images, file_digests, list_images, model_decoding, read_manifest,
                      scan_image_folder, summarize_unread)
from ..metrics import bootstrap_intervals, classification_metrics, constant_output_warning, reliability_diagram
from ..model import load_model, read_model_metadata
from ._predict import predict_probabilities


# Model metadata key: SHA-256 of the file bytes of every image that trained the model ("trained") and
# of every image its configuration was selected on ("selected": the search's validation images).
SEEN_IMAGES_KEY = "seen_images"


@dataclass
class SeenImages:
    """Which evaluation images the model already saw; `known` is False when the model's metadata
    does not record its images (a model saved before medsweep stored them)."""

    total: int
    trained: int
    selected: int
    unseen: list[int]
    known: bool
    same_folder: bool = False

    @property
    def seen(self) -> int:
        return self.total - len(self.unseen)

    def describe(self, excluded: bool = False) -> str:
        """One line for the top of `medsweep evaluate`'s output."""
        if excluded and self.seen:
            return (f"excluded {self.seen} of {self.total} images that trained or selected this model (by content "
                    f"hash); measuring the other {len(self.unseen)}")
        if not self.known:
            where = " (the folder it was trained on)" if self.same_folder else ""
            return (f"warning: the model does not record which images trained it; cannot tell whether these "
                    f"{self.total} images{where} are new to it")
        if not self.seen:
            return f"none of the {self.total} images trained or selected this model (checked by content hash)"
        return (f"warning: {self.seen} of {self.total} images trained ({self.trained}) or selected "
                f"({self.selected}) this model (by content hash), so these figures are optimistic; "
                "pass --exclude-seen to measure the others only")


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    intervals: dict[str, list[float]]
    threshold: float | None
    class_names: list[str]
    unread: str | None = None  # the files of `data` that were not read, by reason (None: all were)
    seen: SeenImages | None = None
    reliability: dict[str, Any] | None = None
    warning: str | None = None  # constant outputs or one class for every image (`constant_output_warning`)


def seen_image_hashes(trained: list[Path] | tuple[Path, ...], selected: list[Path] | tuple[Path, ...] = ()
                      ) -> dict[str, list[str]]:
    """The metadata section `save_model` should store under SEEN_IMAGES_KEY (sorted SHA-256s)."""
    return {"trained": sorted(set(file_digests(list(trained)))),
            "selected": sorted(set(file_digests(list(selected))))}


def final_model_seen_images(dataset: Any) -> dict[str, list[str]]:
    """SEEN_IMAGES_KEY's section for a model trained on every development image of an ImageDataset
    (`train --final`): those images, and the ones the search validated on (folds, split or --val-dir)."""
    paths = dataset.train_files.paths
    trained = [paths[i] for i in dataset.plan.development]
    if dataset.val_files is not None:
        selected = list(dataset.val_files.paths)
    elif dataset.plan.validation is not None:
        selected = [paths[i] for i in dataset.plan.validation[1]]
    else:
        selected = [paths[i] for i in sorted({int(i) for _, fold in dataset.plan.folds for i in fold})]
    return seen_image_hashes(trained, selected)


def seen_images(metadata: dict[str, Any], files: LabeledFiles, data: str | Path | None = None) -> SeenImages:
    """Count the evaluation files whose content hash is among the model's trained or selected images."""
    recorded = metadata.get(SEEN_IMAGES_KEY)
    total = len(files)
    if not recorded:
        trained_on = metadata.get("trained_on")
        same = bool(data and trained_on and Path(data).expanduser().resolve() == Path(trained_on).resolve())
        return SeenImages(total, 0, 0, list(range(total)), known=False, same_folder=same)
    trained, selected = set(recorded.get("trained", ())), set(recorded.get("selected", ()))
    digests = file_digests(list(files.paths))
    in_trained = [d in trained for d in digests]
    in_selected = [d in selected and d not in trained for d in digests]
    unseen = [i for i, d in enumerate(digests) if d not in trained and d not in selected]
    return SeenImages(total, sum(in_trained), sum(in_selected), unseen, known=True)



def open_labeled(path: str | Path, class_names: list[str]) -> LabeledFiles:
    """A folder of class subfolders, or a CSV manifest (path,label[,group]), with the model's classes."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path, tuple(class_names))[0]
    if path.is_dir():
        present = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not present:
            raise DataError(f"evaluation data {path} has no class subfolders; --data wants one subfolder per class "
                            f"({', '.join(class_names)}) holding its images; `medsweep predict MODEL FILE...` "
                            "takes loose images")
        unknown = sorted(set(present) - set(class_names))
        if unknown:
            raise DataError(f"{path} has class folders {unknown} the model does not know (its classes: {class_names})")
        return scan_image_folder(path, class_names, role="evaluation") if present == sorted(class_names) \
            else _partial_folder(path, class_names)
    raise DataError(f"evaluation data {path} is neither a folder of class subfolders nor a .csv manifest")


def _partial_folder(path: Path, class_names: list[str]) -> LabeledFiles:
    # An evaluation folder may lack a class (e.g. only positives); scan the ones it has.
    present = [name for name in class_names if (path / name).is_dir()]
    paths: list[Path] = []
    labels: list[int] = []
    unread = []
    for name in present:
        scanned, skipped = list_images(path / name, path)
        paths.extend(scanned)
        unread.extend(skipped)
        labels.extend([class_names.index(name)] * len(scanned))
    return LabeledFiles(tuple(class_names), tuple(paths), tuple(labels), tuple(unread))


@dataclass
class Measurement:
    """A saved model measured on labelled files: every metric at the model's threshold, bootstrap
    95% intervals, the reliability diagram, and the labels and probabilities they came from."""

    metrics: dict[str, Any]
    intervals: dict[str, list[float]]
    reliability: dict[str, Any]
    threshold: float | None
    labels: np.ndarray
    probabilities: np.ndarray


def _threshold(metadata: dict[str, Any]) -> float | None:
    return (metadata.get("threshold") or {}).get("value")


def measure_files(model_path: str | Path, files: LabeledFiles, decoding: Any, *, threshold: float | None,
                  resamples: int = 1000, seed: int = 0) -> Measurement:
    """The one evaluation pipeline (`evaluate --data` and `evaluate --test` both): load the model,
    decode `files` at its input size with `decoding`, predict, and measure."""
    model, _ = load_model(model_path)
    size = int(model.input_shape[1])
    probabilities = predict_probabilities(model, decode_images(files.paths, size, decoding))
    labels = np.asarray(files.labels, dtype=np.int64)
    class_names = list(files.class_names)
    metrics = classification_metrics(labels, probabilities, class_names, threshold=threshold)
    intervals = bootstrap_intervals(labels, probabilities, class_names, resamples=resamples, seed=seed,
                                    threshold=threshold) if resamples else {}
    return Measurement(metrics, intervals, reliability_diagram(labels, probabilities), threshold, labels,
                       probabilities)


def evaluate_model(model_path: str | Path, data: str | Path, *, resamples: int = 1000, seed: int = 0,
                   exclude_seen: bool = False) -> Evaluation:
    """Predict every image of `data` with the saved model and measure it with bootstrap intervals;
    with `exclude_seen`, only the images that neither trained nor selected the model."""
    metadata = read_model_metadata(model_path)
    class_names = list(metadata["class_names"])
    files = open_labeled(data, class_names)
    if not len(files):
        raise DataError(f"evaluation data {data} holds no images")
    seen = seen_images(metadata, files, data)
    if exclude_seen:
        if not seen.known:
            raise DataError(f"{model_path} does not record which images trained it, so --exclude-seen cannot "
                            "work; retrain it with this medsweep version or evaluate on images it never saw")
        if not seen.unseen:
            raise DataError(f"all {seen.total} images in {data} trained or selected {model_path}; "
                            "evaluate on images it never saw, such as the study's locked test split")
        files = files.subset(seen.unseen)
    measured = measure_files(model_path, files, model_decoding(metadata), threshold=_threshold(metadata),
                             resamples=resamples, seed=seed)
    root = Path(data).expanduser()
    unread = summarize_unread(files.unread, root if root.is_dir() else root.parent) if files.unread else None
    return Evaluation(measured.metrics, measured.intervals, measured.threshold, class_names,
                      f"not read: {len(files.unread)} file(s): {unread}" if unread else None, seen,
                      measured.reliability,
                      constant_output_warning(measured.probabilities, "images", class_names, measured.threshold,
                                              measured.labels))
