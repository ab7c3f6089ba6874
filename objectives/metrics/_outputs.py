"""Model outputs as class probabilities: one sigmoid column or softmax columns, always (n, classes)."""

from __future__ import annotations

import numpy as np


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Model outputs (one sigmoid column, or softmax columns) as an (n, classes) matrix."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[1] == 1:
        return np.hstack([1.0 - outputs, outputs])
    return outputs
