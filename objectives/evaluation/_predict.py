"""A saved model's class probabilities: for image files (`medsweep predict`) and for decoded images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..images import decode_image, model_decoding
from ..metrics import class_probabilities
from ..model import load_model


def predict_files(model_path: str | Path, files: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each file's predicted class and its probability, plus every class's probability."""
    model, metadata = load_model(model_path)
    class_names = metadata["class_names"]
    size = int(model.input_shape[1])
    decoding = model_decoding(metadata)
    images = np.stack([decode_image(Path(f), size, decoding) for f in files]).astype(np.float32)
    probabilities = class_probabilities(model.predict(images, verbose=0))
    rows = []
    for file, row in zip(files, probabilities):
        best = int(row.argmax())
        rows.append({"file": str(file), "class": class_names[best], "probability": float(row[best]),
                     "probabilities": {name: float(p) for name, p in zip(class_names, row)}})
    return rows


def predict_probabilities(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class probabilities, (n, classes), for uint8 images already at the model's size."""
    outputs = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return class_probabilities(outputs)
