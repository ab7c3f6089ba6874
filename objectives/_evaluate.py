"""Measuring a saved model on labelled images: every metric with a bootstrap 95% interval,
and the sensitivity/specificity at the threshold stored with the model (if any)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._data import LabeledFiles, decode_images, scan_image_folder
from ._errors import DataError
from ._intervals import bootstrap_intervals
from ._metrics import class_probabilities, classification_metrics


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    intervals: dict[str, list[float]]
    threshold: float | None
    class_names: list[str]
    unread: str | None = None  # the files of `data` that were not read, by reason (None: all were)


def predict_probabilities(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class probabilities, (n, classes), for uint8 images already at the model's size."""
    outputs = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return class_probabilities(outputs)


def open_labeled(path: str | Path, class_names: list[str]) -> LabeledFiles:
    """A folder of class subfolders, or a CSV manifest (path,label[,group]), with the model's classes."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        from ._manifest import read_manifest

        return read_manifest(path, tuple(class_names))[0]
    if path.is_dir():
        present = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = sorted(set(present) - set(class_names))
        if unknown:
            raise DataError(f"{path} has class folders {unknown} the model does not know (its classes: {class_names})")
        return scan_image_folder(path, class_names, role="evaluation") if present == sorted(class_names) \
            else _partial_folder(path, class_names)
    raise DataError(f"evaluation data {path} is neither a folder of class subfolders nor a .csv manifest")


def _partial_folder(path: Path, class_names: list[str]) -> LabeledFiles:
    # An evaluation folder may lack a class (e.g. only positives); scan the ones it has.
    present = [name for name in class_names if (path / name).is_dir()]
    from ._formats import list_images

    paths: list[Path] = []
    labels: list[int] = []
    unread = []
    for name in present:
        scanned, skipped = list_images(path / name, path)
        paths.extend(scanned)
        unread.extend(skipped)
        labels.extend([class_names.index(name)] * len(scanned))
    return LabeledFiles(tuple(class_names), tuple(paths), tuple(labels), tuple(unread))


def evaluate_model(model_path: str | Path, data: str | Path, *, resamples: int = 1000, seed: int = 0) -> Evaluation:
    """Predict every image of `data` with the saved model and measure it with bootstrap intervals."""
    from ._train import load_model

    model, metadata = load_model(model_path)
    class_names = list(metadata["class_names"])
    files = open_labeled(data, class_names)
    if not len(files):
        raise DataError(f"evaluation data {data} holds no images")
    size = int(model.input_shape[1])
    from ._formats import model_decoding

    probabilities = predict_probabilities(model, decode_images(files.paths, size, model_decoding(metadata)))
    labels = np.asarray(files.labels, dtype=np.int64)
    threshold = (metadata.get("threshold") or {}).get("value")
    metrics = classification_metrics(labels, probabilities, class_names, threshold=threshold)
    intervals = bootstrap_intervals(labels, probabilities, class_names, resamples=resamples, seed=seed,
                                    threshold=threshold) if resamples else {}
    from ._formats import summarize_unread

    root = Path(data).expanduser()
    unread = summarize_unread(files.unread, root if root.is_dir() else root.parent) if files.unread else None
    return Evaluation(metrics, intervals, threshold, class_names,
                      f"not read: {len(files.unread)} file(s): {unread}" if unread else None)
