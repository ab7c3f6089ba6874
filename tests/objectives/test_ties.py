"""The corrected resampled t-test against hand-computed examples, and the within-noise selection."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from medsweep.objectives import ConfigError
from medsweep.objectives.metrics import cheapest, corrected_resampled_t, describe_ties, trials_within_noise

BEST = [0.90, 0.85, 0.88, 0.92, 0.87]
# differences 0.02, 0.01, 0.03, 0.02, 0.01: mean 0.018, sample variance 0.00028 / 4 = 0.00007
CLEARLY_WORSE = [0.88, 0.84, 0.85, 0.90, 0.86]
# differences 0.03, 0.01, 0.02, 0.04, 0.00: mean 0.02, sample variance 0.001 / 4 = 0.00025
NOISY = [0.87, 0.84, 0.86, 0.88, 0.87]


def test_hand_computed_statistic_and_p_value() -> None:
    # 5 folds, validation share 0.2: n_val / n_train = 0.25, variance factor 1/5 + 0.25 = 0.45
    statistic, p_value = corrected_resampled_t(BEST, CLEARLY_WORSE, 0.2)
    assert statistic == pytest.approx(0.018 / math.sqrt(0.45 * 0.00007))  # 3.2071
    assert statistic == pytest.approx(3.2071, abs=1e-4)
    assert p_value == pytest.approx(2 * stats.t.sf(3.2071349, 4), rel=1e-6)  # 0.0327, 4 degrees of freedom
    assert p_value == pytest.approx(0.0327, abs=1e-4)


def test_correction_turns_a_naive_difference_into_a_tie() -> None:
    statistic, p_value = corrected_resampled_t(BEST, NOISY, 0.2)
    assert statistic == pytest.approx(0.02 / math.sqrt(0.45 * 0.00025))  # 1.8856
    assert p_value == pytest.approx(0.1323, abs=1e-3)
    naive = stats.ttest_rel(BEST, NOISY).pvalue  # the plain paired t-test calls it a difference
    assert naive < 0.05 < p_value


def test_trials_within_noise_keeps_indistinguishable_ones_with_p_values() -> None:
    within = trials_within_noise(BEST, {3: CLEARLY_WORSE, 7: NOISY, 9: BEST}, test_fraction=0.2)
    assert list(within) == [7, 9]
    assert within[9] == 1.0 and within[7] == pytest.approx(0.1323, abs=1e-3)
    assert list(trials_within_noise(BEST, {3: CLEARLY_WORSE}, 0.2, alpha=0.01)) == [3]
    assert describe_ties(len(within)) == "2 trials within noise of the best"
    assert describe_ties(1) == "1 trial within noise of the best"


def test_constant_differences_and_bad_inputs() -> None:
    assert corrected_resampled_t(BEST, [v - 0.01 for v in BEST], 0.2)[1] == 0.0
    with pytest.raises(ConfigError, match="trial 4 has 3 fold scores"):
        trials_within_noise(BEST, {4: [0.8, 0.8, 0.8]}, 0.2)
    with pytest.raises(ConfigError, match="test fraction 1.5"):
        corrected_resampled_t(BEST, NOISY, 1.5)
    with pytest.raises(ConfigError, match="at least 2 shared folds"):
        corrected_resampled_t([0.9], [0.8], 0.2)


def test_cheapest_candidate() -> None:
    assert cheapest([7, 9, 12], {7: 300.0, 9: 120.0, 12: 120.0}) == 9
