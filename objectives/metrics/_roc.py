"""The ROC curve of a binary validation set, thinned to a few points for the trial record."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._outputs import class_probabilities


def roc_curve_points(labels: Sequence[int], outputs: Any, max_points: int = 101) -> dict[str, list[float]] | None:
    """`{"fpr": [...], "tpr": [...]}` for a two-class problem (the second class positive, as in
    `classification_metrics`), at most `max_points` long; None for 3+ classes or one class present."""
    if outputs is None:
        return None
    from sklearn.metrics import roc_curve

    probabilities = class_probabilities(outputs)
    y_true = np.asarray(labels, dtype=np.int64)
    if probabilities.shape[1] != 2 or len(np.unique(y_true)) != 2:
        return None
    fpr, tpr, _ = roc_curve(y_true, probabilities[:, 1], drop_intermediate=True)
    if len(fpr) > max_points:  # keep both ends and an even spread between them
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 4) for v in fpr], "tpr": [round(float(v), 4) for v in tpr]}
