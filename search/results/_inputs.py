"""Checks `predict` and `evaluate` run before TensorFlow loads: the model file is a medsweep
model and every image decodes, so a typo or a corrupt file fails in a second, not after the
multi-second TensorFlow start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medsweep.objectives import DataError
from medsweep.objectives.evaluation import open_labeled
from medsweep.objectives.images import decode_images
from medsweep.objectives.model import read_model_metadata

_CHECK_SIZE = 8  # decoding at a tiny size reads the whole file, which is what finds corruption


def check_prediction_inputs(model_file: str | Path, files: Sequence[str | Path]) -> dict[str, Any]:
    """The model's metadata, after checking that every file exists and decodes."""
    metadata = read_model_metadata(model_file)
    paths = [Path(f) for f in files]
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise DataError(f"{folders[0]} is a folder; predict takes image files: pass them, e.g. {folders[0]}/*.png "
                        "(for a folder of class subfolders, `medsweep evaluate MODEL --data FOLDER` measures the "
                        "model)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"image file {shown} does not exist; check the path")
    decode_images(paths, _CHECK_SIZE)
    return metadata


def check_evaluation_inputs(model_file: str | Path, data: str | Path) -> dict[str, Any]:
    """The model's metadata, after checking that the labelled data fits its classes and decodes."""
    metadata = read_model_metadata(model_file)
    files = open_labeled(data, list(metadata["class_names"]))
    if not len(files):
        raise DataError(f"evaluation data {data} holds no images")
    decode_images(list(files.paths), _CHECK_SIZE)
    return metadata
