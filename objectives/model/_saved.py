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
    """The metadata `save_model` stored (no Keras import)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist; train one with `medsweep train`")
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(_METADATA_ENTRY))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise DataError(
            f"{path} is not a model saved by `medsweep train` (no {_METADATA_ENTRY} inside); retrain it"
        ) from None


def load_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by `save_model` and its metadata."""
    metadata = read_model_metadata(path)
    keras = import_keras()
    from . import _layers  # noqa: F401  registers medsweep's layers for deserialisation

    return keras.models.load_model(path, compile=False), metadata


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
