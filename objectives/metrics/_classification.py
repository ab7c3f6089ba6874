"""Validation metrics from predicted probabilities, binary and multi-class: scikit-learn for a
trial's final metrics, and one exact NumPy function for the per-epoch curves of every trial."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .._errors import ConfigError
from ._calibration import calibration_metrics
from ._outputs import class_probabilities

# metric name -> optimisation direction, for the objectives a study may choose
METRIC_DIRECTIONS: dict[str, str] = {
    "auc": "maximize",
    "accuracy": "maximize",
    "balanced_accuracy": "maximize",
    "loss": "minimize",
}


SENS_AT_SPEC_PREFIX = "sens@spec="


def parse_objective(name: str) -> tuple[str, str, float | None]:
    """An objective name as (canonical name, direction, target specificity or None).

    Besides the names in METRIC_DIRECTIONS, `sens@spec=0.9` is the sensitivity at the threshold
    where validation specificity first reaches 0.9 (binary studies only)."""
    text = str(name).strip()
    if text in METRIC_DIRECTIONS:
        return text, METRIC_DIRECTIONS[text], None
    if text.startswith(SENS_AT_SPEC_PREFIX):
        try:
            target = float(text[len(SENS_AT_SPEC_PREFIX):])
        except ValueError:
            target = math.nan
        if not 0 < target < 1:
            raise ConfigError(f"objective {text!r} needs a target specificity between 0 and 1, e.g. sens@spec=0.9")
        return f"{SENS_AT_SPEC_PREFIX}{target:g}", "maximize", target
    raise ConfigError(
        f"unknown objective {text!r}; choose one of: {', '.join(METRIC_DIRECTIONS)}, or sens@spec=0.9 "
        "(any target specificity)"
    )


def sensitivity_at_specificity(labels: Sequence[int], scores: np.ndarray, target: float
                               ) -> tuple[float, float, float]:
    """(sensitivity, specificity reached, threshold) at the ROC point with specificity >= target
    and the highest sensitivity (scikit-learn's roc_curve); predict positive when score >= threshold."""
    from sklearn.metrics import roc_curve

    false_positive_rate, true_positive_rate, thresholds = roc_curve(np.asarray(labels), np.asarray(scores))
    allowed = np.flatnonzero(1.0 - false_positive_rate >= target - 1e-12)
    best = allowed[np.argmax(true_positive_rate[allowed])]
    threshold = float(min(thresholds[best], 1.0))
    return float(true_positive_rate[best]), float(1.0 - false_positive_rate[best]), threshold


def threshold_metrics(labels: Sequence[int], scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity and specificity when the positive class is predicted at score >= threshold."""
    from sklearn.metrics import recall_score

    y_true = np.asarray(labels, dtype=np.int64)
    predicted = (np.asarray(scores) >= threshold).astype(np.int64)
    recalls = recall_score(y_true, predicted, labels=[0, 1], average=None, zero_division=0)
    return {"sensitivity": float(recalls[1]), "specificity": float(recalls[0]), "threshold": float(threshold)}


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def classification_metrics(labels: Sequence[int], outputs: np.ndarray,
                           class_names: Sequence[str], *, target_specificity: float | None = None,
                           threshold: float | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC, sensitivity, specificity, F1, loss, Brier score,
    expected calibration error (`ece`, see _calibration), confusion matrix.

    Binary: the second class (sorted folder names) is the positive one. Three or more classes:
    macro one-vs-rest AUC, macro F1 and per-class sensitivity. With `target_specificity`
    (binary), also `sens@spec=T` and the threshold it was chosen at on these labels; with a
    fixed `threshold` (chosen elsewhere), the sensitivity and specificity at it."""
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
    if (target_specificity is not None or threshold is not None) and n_classes != 2:
        raise ConfigError(
            f"sensitivity at a specificity needs two classes, the data has {n_classes}; choose another objective"
        )
    if target_specificity is not None:
        key = f"{SENS_AT_SPEC_PREFIX}{target_specificity:g}"
        if len(present) == 2:
            sensitivity, specificity, chosen = sensitivity_at_specificity(y_true, probabilities[:, 1],
                                                                          target_specificity)
            result.update({key: sensitivity, f"{key} specificity": specificity, f"{key} threshold": chosen})
        else:
            result[key] = None
    if threshold is not None:
        at = threshold_metrics(y_true, probabilities[:, 1], threshold)
        result.update({"threshold": at["threshold"], "sensitivity at threshold": at["sensitivity"],
                       "specificity at threshold": at["specificity"]})
    # Brier and ECE (10 equal-width bins): are the probabilities honest, not only well ranked?
    result.update(calibration_metrics(y_true, probabilities / probabilities.sum(axis=1, keepdims=True)))
    result["confusion_matrix"] = skm.confusion_matrix(y_true, predicted, labels=all_labels).tolist()
    return result


def epoch_metrics(labels: np.ndarray, outputs: np.ndarray, num_classes: int) -> dict[str, float | None]:
    """`classification_metrics`' loss, accuracy, balanced accuracy and (macro one-vs-rest) ROC
    AUC, equal to scikit-learn's (tested), for the per-epoch validation of every trial.

    Plain NumPy because scikit-learn's input checks cost ~25 ms a call here, more than twenty
    epochs of a head trained on cached features; the trial's final metrics stay scikit-learn's."""
    y_true = np.asarray(labels, dtype=np.int64)
    probabilities = np.clip(class_probabilities(outputs), 1e-7, 1 - 1e-7)
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(y_true)
    recalls = [float(np.mean(predicted[y_true == label] == label)) for label in present]
    result: dict[str, float | None] = {
        "loss": float(-np.mean(np.log(normalised[np.arange(len(y_true)), y_true]))),
        "accuracy": float(np.mean(predicted == y_true)),
        "balanced_accuracy": float(np.mean(recalls)) if len(present) > 1 else None,
        "auc": None,
    }
    if len(present) == num_classes:
        columns = [1] if num_classes == 2 else range(num_classes)
        result["auc"] = float(np.mean([_binary_auc(y_true == c, probabilities[:, c]) for c in columns]))
    return result


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with average ranks for ties (what the ROC curve's
    trapezoids give, and what scikit-learn's roc_auc_score returns)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))
