"""A trained model on disk: one .keras file holding the model and medsweep's metadata (class
names, configuration, data fingerprint, decoding, seen images), so one file is enough to predict."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .._errors import DataError
from .._keras import import_keras
from .._text import quoted, shown_path

_METADATA_ENTRY = "medsweep.json"


def save_model(model: Any, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Save as .keras with medsweep's metadata (class names, config, fingerprint) inside the
    same zip, so one file is enough to predict."""
    import_keras()
    path = Path(path)
    if path.suffix != ".keras":
        raise DataError(f"model file {path} must end in .keras; pass e.g. -o model.keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(_METADATA_ENTRY, json.dumps(metadata, indent=2))
    return path


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata `save_model` stored, with its class names checked (no Keras import)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {shown_path(path)} does not exist; train one with `medsweep train`")
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(_METADATA_ENTRY))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(
            f"{shown_path(path)} is not a model saved by `medsweep train` (no {_METADATA_ENTRY} inside); retrain it"
        ) from None
    except OSError as error:
        raise DataError(f"cannot read model file {shown_path(path)} ({error.strerror}); check its "
                        "permissions") from None
    _check_class_names(path, metadata)
    return metadata


def _edited(path: Path, problem: str) -> DataError:
    return DataError(f"{_METADATA_ENTRY} in {shown_path(path)} {problem}; the file was edited or comes from "
                     "elsewhere: use the model as `medsweep train` saved it, or retrain it")


def _check_class_names(path: Path, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise _edited(path, "is not a mapping")
    names = metadata.get("class_names")
    if names is None:
        raise _edited(path, "names no class_names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise _edited(path, f"has class_names {quoted(names)}, not a list of names")
    if len(names) < 2:
        raise _edited(path, f"names {len(names)} class{'' if len(names) == 1 else 'es'} ({quoted(names)}); a "
                            "classifier has at least two")
    if len(set(names)) != len(names):
        raise _edited(path, f"names a class twice ({quoted(names)})")


def output_classes(model: Any) -> int:
    """How many classes a model's output scores: one sigmoid unit is two classes."""
    units = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    return 2 if units == 1 else int(units or 0)


def load_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by `save_model` and its metadata, checked against each other.

    Keras' safe mode stays on: a Lambda layer (Python code inside the file) is refused, not run."""
    metadata = read_model_metadata(path)
    keras = import_keras()
    from . import _layers  # noqa: F401  registers medsweep's layers for deserialisation

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError, OSError... with pages of text
        detail = " ".join(str(error).split())
        if "Lambda" in detail or "safe_mode" in detail:
            raise DataError(f"{shown_path(path)} holds a Lambda layer (Python code), which medsweep does not load: "
                            "it would run code from the file; use a model saved by `medsweep train`") from None
        raise DataError(f"{shown_path(path)} cannot be loaded as a medsweep model ({type(error).__name__}: "
                        f"{quoted(detail, 120)}); use a model saved by `medsweep train`") from None
    _check_fits(path, model, metadata)
    return model, metadata


def _check_fits(path: Path | str, model: Any, metadata: dict[str, Any]) -> None:
    """The model takes square RGB images and scores as many classes as its metadata names."""
    shape = model.input_shape if isinstance(model.input_shape, tuple) else None
    if shape is None or len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise DataError(f"{shown_path(path)} takes inputs of shape {quoted(model.input_shape)}, not square RGB images "
                        "(a medsweep model takes (size, size, 3)); use a model saved by `medsweep train`")
    names = metadata["class_names"]
    classes = output_classes(model)
    if classes != len(names):
        raise _edited(Path(path), f"names {len(names)} classes ({quoted(names)}) but the model's output scores "
                                  f"{classes}")


def update_model_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Replace the metadata inside a saved model (copied entry by entry into a temporary file
    beside it, then renamed into place, so an interrupted write leaves the old file whole)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(suffix=".keras", dir=path.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                if item.filename != _METADATA_ENTRY:
                    target.writestr(item, source.read(item.filename))
            target.writestr(_METADATA_ENTRY, json.dumps(metadata, indent=2))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
