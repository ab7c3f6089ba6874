"""Validation metrics from predicted probabilities (scikit-learn), binary and multi-class."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

# metric name -> optimisation direction, for the objectives a study may choose
METRIC_DIRECTIONS: dict[str, str] = {
    "auc": "maximize",
    "accuracy": "maximize",
    "balanced_accuracy": "maximize",
    "loss": "minimize",
}


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Model outputs (one sigmoid column, or softmax columns) as an (n, classes) matrix."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[1] == 1:
        return np.hstack([1.0 - outputs, outputs])
    return outputs


def classification_metrics(labels: Sequence[int], outputs: np.ndarray,
                           class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC, sensitivity, specificity, F1, loss, confusion matrix.

    Binary: the second class (sorted folder names) is the positive one. Three or more classes:
    macro one-vs-rest AUC, macro F1 and per-class sensitivity."""
    from sklearn import metrics as skm

    y_true = np.asarray(labels, dtype=np.int64)
    probabilities = np.clip(class_probabilities(outputs), 1e-7, 1 - 1e-7)
    n_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    all_labels = list(range(n_classes))
    present = np.unique(y_true)
    result: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, predicted)) if len(present) > 1 else None,
        "loss": float(skm.log_loss(y_true, probabilities / probabilities.sum(axis=1, keepdims=True),
                                    labels=all_labels)),
        "n": int(len(y_true)),
    }
    recalls = skm.recall_score(y_true, predicted, labels=all_labels, average=None, zero_division=0)
    if n_classes == 2:
        result["auc"] = _clean(skm.roc_auc_score(y_true, probabilities[:, 1])) if len(present) == 2 else None
        result["sensitivity"] = float(recalls[1])
        result["specificity"] = float(recalls[0])
        result["f1"] = float(skm.f1_score(y_true, predicted, pos_label=1, zero_division=0))
        result["positive_class"] = class_names[1]
    else:
        auc = None
        if len(present) == n_classes:
            auc = _clean(skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro",
                                           labels=all_labels))
        result["auc"] = auc
        result["f1"] = float(skm.f1_score(y_true, predicted, average="macro", zero_division=0))
        for name, recall in zip(class_names, recalls):
            result[f"sensitivity[{name}]"] = float(recall)
    result["confusion_matrix"] = skm.confusion_matrix(y_true, predicted, labels=all_labels).tolist()
    return result
