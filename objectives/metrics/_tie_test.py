"""Ties made visible: which trials cannot be told apart from the best one.

Two trials scored on the same cross-validation folds are compared by the corrected resampled t-test
(Nadeau & Bengio 2003, as recommended by Bouckaert & Frank 2004): the folds share most training
images, so the fold differences are correlated and the plain paired t-test is far too eager to call
a difference; the variance is widened by (1/k + n_validation/n_train). The same correction
`cv_summary` uses for its intervals."""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence, TypeVar

import numpy as np

from .._errors import ConfigError

Key = TypeVar("Key", bound=Hashable)
TIE_TEST = "corrected resampled t-test (Nadeau & Bengio 2003), two-sided"


def corrected_resampled_t(scores_a: Sequence[float], scores_b: Sequence[float], test_fraction: float
                          ) -> tuple[float, float]:
    """(t statistic, two-sided p-value) of the mean fold difference a - b, with k - 1 degrees of
    freedom; `test_fraction` is n_validation / (n_validation + n_train) of one fold."""
    from scipy import stats

    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"fold scores must pair up: {len(a)} against {len(b)} folds; compare trials "
                          "measured on the same folds")
    if len(a) < 2:
        raise ConfigError("the corrected resampled t-test needs at least 2 shared folds; cross-validate with --cv")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction {test_fraction!r} must be between 0 and 1 (validation share of a fold)")
    differences = a - b
    count = len(differences)
    mean = float(differences.mean())
    variance = float(differences.var(ddof=1))
    if variance == 0.0:
        # Identical differences on every fold: no noise to compare against.
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    ratio = test_fraction / (1.0 - test_fraction)
    statistic = mean / math.sqrt((1.0 / count + ratio) * variance)
    p_value = float(2.0 * stats.t.sf(abs(statistic), count - 1))
    return float(statistic), p_value


def trials_within_noise(best_scores: Sequence[float], other_scores_by_trial: Mapping[Key, Sequence[float]],
                        test_fraction: float, alpha: float = 0.05) -> dict[Key, float]:
    """The trials whose fold scores are not distinguishable from the best trial's (p >= alpha),
    each with its p-value, in the order given."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha {alpha!r} must be between 0 and 1, e.g. 0.05")
    within: dict[Key, float] = {}
    for trial, scores in other_scores_by_trial.items():
        if len(scores) != len(best_scores):
            raise ConfigError(f"trial {trial} has {len(scores)} fold scores, the best trial {len(best_scores)}; "
                              "only trials measured on the same folds can be compared")
        p_value = corrected_resampled_t(best_scores, scores, test_fraction)[1]
        if p_value >= alpha:
            within[trial] = p_value
    return within


def describe_ties(count: int) -> str:
    """The line status, the report and the export show, e.g. '7 trials within noise of the best'."""
    if count == 0:
        return "no other trial is within noise of the best"
    return f"{count} trial{'s' if count != 1 else ''} within noise of the best"


def cheapest(candidates: Sequence[Key], cost: Mapping[Key, float]) -> Key:
    """The candidate with the lowest cost (ties keep the earlier one), for `export --prefer cheapest`."""
    if not candidates:
        raise ConfigError("no candidate trials to choose the cheapest from")
    return min(candidates, key=lambda key: (cost[key], list(candidates).index(key)))
