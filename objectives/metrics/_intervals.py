"""Uncertainty of the numbers: a 95% interval over cross-validation folds, and bootstrap 95%
intervals of a model's metrics on one evaluation set."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._classification import classification_metrics

CV_INTERVAL_METHOD = "corrected resampled t (Nadeau & Bengio 2003)"


def cv_summary(fold_values: Sequence[float], validation_share: float,
               bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean, standard deviation and 95% interval of per-fold values.

    Folds share most of their training images, so their values are correlated and the plain
    t interval (std / sqrt(n)) is too narrow. The corrected resampled t interval widens the
    variance by (1/n + n_validation/n_train); `validation_share` is n_validation / n_total.
    `bounds` clips the interval to the metric's range (e.g. 0 to 1 for AUC)."""
    from scipy import stats

    values = np.asarray(fold_values, dtype=np.float64)
    count = len(values)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if count > 1 else 0.0
    if count > 1:
        ratio = validation_share / (1.0 - validation_share)
        half_width = float(stats.t.ppf(0.975, count - 1) * math.sqrt((1.0 / count + ratio) * std ** 2))
    else:
        half_width = math.nan
    interval: list[float | None] = [None, None]
    if math.isfinite(half_width):
        interval = [mean - half_width, mean + half_width]
        if bounds is not None:
            interval = [max(bounds[0], interval[0]), min(bounds[1], interval[1])]
    return {"mean": mean, "std": std, "ci95": [_round(v) for v in interval],
            "folds": [float(v) for v in values], "method": CV_INTERVAL_METHOD}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


SCALAR_METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "loss")


def bootstrap_intervals(labels: Sequence[int], outputs: np.ndarray, class_names: Sequence[str], *,
                        resamples: int = 1000, seed: int = 0, threshold: float | None = None
                        ) -> dict[str, list[float | None]]:
    """Percentile bootstrap 95% interval of every scalar metric (images resampled with
    replacement, stratified by class so each resample holds every class)."""
    from sklearn.utils import resample

    y_true = np.asarray(labels, dtype=np.int64)
    outputs = np.asarray(outputs)
    indices = np.arange(len(y_true))
    collected: dict[str, list[float]] = {}
    for round_index in range(resamples):
        chosen = resample(indices, replace=True, stratify=y_true, random_state=seed + round_index)
        metrics = classification_metrics(y_true[chosen], outputs[chosen], class_names, threshold=threshold)
        for name, value in metrics.items():
            if isinstance(value, float) and math.isfinite(value) and name != "threshold":
                collected.setdefault(name, []).append(value)
    return {name: [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
            for name, values in collected.items()}
