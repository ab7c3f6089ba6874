"""Objective names, sensitivity at a target specificity, CV intervals, bootstrap intervals and
class balancing: plain numbers with known answers, no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from medsweep.objectives import ConfigError, TrialConfig
from medsweep.objectives.metrics import bootstrap_intervals, classification_metrics, cv_summary, parse_objective, sensitivity_at_specificity
from medsweep.objectives.training import class_weights, oversample_indices

# 10 negatives, 10 positives; scores chosen so the answers can be read off by hand
NEGATIVE_SCORES = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.9]
POSITIVE_SCORES = [0.2, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.95]
LABELS = np.array([0] * 10 + [1] * 10)
SCORES = np.array(NEGATIVE_SCORES + POSITIVE_SCORES)


def test_objective_names_and_directions() -> None:
    assert parse_objective("balanced_accuracy") == ("balanced_accuracy", "maximize", None)
    assert parse_objective("loss")[1] == "minimize"
    assert parse_objective("sens@spec=0.90") == ("sens@spec=0.9", "maximize", 0.9)
    for bad in ("sens@spec=1.5", "sens@spec=x", "precision"):
        with pytest.raises(ConfigError, match="sens@spec=0.9"):
            parse_objective(bad)


def test_sensitivity_at_target_specificity_picks_the_highest_allowed_sensitivity() -> None:
    # specificity >= 0.9 allows one false positive (0.9): threshold 0.5 keeps 9/10 negatives
    # below it and catches the 9 positives from 0.5 up
    sensitivity, specificity, threshold = sensitivity_at_specificity(LABELS, SCORES, 0.9)
    assert (sensitivity, specificity, threshold) == (0.9, 0.9, 0.5)
    # specificity 1.0 forbids the 0.9 negative: only 0.95 is above it
    assert sensitivity_at_specificity(LABELS, SCORES, 1.0 - 1e-9)[0] == pytest.approx(0.1)


def test_classification_metrics_adds_sens_at_spec_and_fixed_threshold_figures() -> None:
    metrics = classification_metrics(LABELS, SCORES, ["healthy", "tumour"], target_specificity=0.9)
    assert metrics["sens@spec=0.9"] == 0.9 and metrics["sens@spec=0.9 threshold"] == 0.5
    fixed = classification_metrics(LABELS, SCORES, ["healthy", "tumour"], threshold=0.5)
    assert fixed["sensitivity at threshold"] == 0.9 and fixed["specificity at threshold"] == 0.9
    assert fixed["sensitivity"] == 0.8  # argmax sends the 0.5 tie to the first class
    with pytest.raises(ConfigError, match="two classes"):
        classification_metrics([0, 1, 2], np.eye(3), ["a", "b", "c"], target_specificity=0.9)


def test_three_class_metrics_have_macro_auc_and_per_class_sensitivity() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    outputs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.5, .4, .1], [.1, .2, .7], [.1, .1, .8]])
    metrics = classification_metrics(labels, outputs, ["class a", "class b", "class c"])
    assert metrics["sensitivity[class b]"] == 0.5 and metrics["sensitivity[class a]"] == 1.0
    assert metrics["balanced_accuracy"] == pytest.approx(5 / 6)
    assert metrics["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 0, 2]]
    assert 0.5 < metrics["auc"] <= 1.0


def test_cv_interval_is_corrected_for_overlapping_training_sets() -> None:
    folds = [0.70, 0.80, 0.75, 0.85, 0.65, 0.72, 0.78, 0.81, 0.69, 0.75]
    summary = cv_summary(folds, validation_share=0.2)
    assert summary["mean"] == pytest.approx(np.mean(folds))
    assert summary["std"] == pytest.approx(np.std(folds, ddof=1))
    low, high = summary["ci95"]
    assert low < summary["mean"] < high and summary["folds"] == folds
    naive_half_width = 2.262 * np.std(folds, ddof=1) / np.sqrt(len(folds))
    assert (high - low) / 2 > 1.5 * naive_half_width  # sqrt(1/10 + 1/4) / sqrt(1/10) = 1.87
    assert cv_summary([0.7], 0.2)["ci95"] == [None, None]
    assert cv_summary([0.3, 0.9], 0.2, bounds=(0.0, 1.0))["ci95"] == [0.0, 1.0]  # wide, clipped to AUC's range


def test_bootstrap_intervals_bracket_the_point_estimate() -> None:
    intervals = bootstrap_intervals(LABELS, SCORES, ["healthy", "tumour"], resamples=100, seed=1)
    point = classification_metrics(LABELS, SCORES, ["healthy", "tumour"])
    for name in ("accuracy", "auc", "sensitivity", "specificity", "balanced_accuracy"):
        low, high = intervals[name]
        assert low <= point[name] <= high and high - low > 0.05
    again = bootstrap_intervals(LABELS, SCORES, ["healthy", "tumour"], resamples=100, seed=1)
    assert again == intervals


def test_class_weights_and_oversampling_balance_the_classes() -> None:
    labels = np.array([0] * 12 + [1] * 4)
    assert class_weights("none", labels, 2) is None
    weights = class_weights("balanced", labels, 2)
    assert weights == pytest.approx({0: 16 / 24, 1: 16 / 8})
    index = oversample_indices(labels, seed=0)
    assert np.bincount(labels[index]).tolist() == [12, 12]
    assert set(range(16)) <= set(index.tolist())  # every original image kept


def test_imbalance_fields_round_trip_and_are_validated() -> None:
    config = TrialConfig(class_weight="balanced", oversample=True)
    assert TrialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="class_weight must be one of none, balanced"):
        TrialConfig(class_weight="inverse")
