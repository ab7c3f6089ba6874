"""Brier, ECE, reliability data and temperature scaling on synthetic outputs with known answers;
one test saves and reloads a real Keras model with the temperature layer appended."""

from __future__ import annotations

import numpy as np
import pytest

from medsweep.objectives import DataError
from medsweep.objectives.metrics import CALIBRATION_BINNING, apply_temperature, brier_score, classification_metrics, expected_calibration_error, fit_temperature, reliability_diagram, temperature_report


def _calibrated_set(count: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the stated probabilities, so the probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    probabilities = rng.uniform(0.02, 0.98, count)
    labels = (rng.uniform(size=count) < probabilities).astype(int)
    return labels, probabilities


def _over_confident(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The same evidence stated too sharply: logits multiplied by `temperature`."""
    logits = np.log(probabilities / (1 - probabilities)) * temperature
    return 1 / (1 + np.exp(-logits))


def test_brier_and_ece_by_hand() -> None:
    labels = [0, 0, 1, 1]
    scores = np.array([0.1, 0.3, 0.6, 0.9])
    assert brier_score(labels, scores) == pytest.approx((0.01 + 0.09 + 0.16 + 0.01) / 4)
    # one image per bin: ECE = mean |label - score| = (0.1 + 0.3 + 0.4 + 0.1) / 4
    assert expected_calibration_error(labels, scores) == pytest.approx(0.225)
    diagram = reliability_diagram(labels, scores)
    assert diagram["count"] == [1, 1, 1, 1] and diagram["observed"] == [0.0, 0.0, 1.0, 1.0]
    assert diagram["predicted"] == pytest.approx([0.1, 0.3, 0.6, 0.9])
    assert diagram["kind"] == "positive-class probability" and "10 equal-width bins" in CALIBRATION_BINNING
    # two images in one bin: |mean label 0.5 - mean score 0.45| weighted 2/2
    assert expected_calibration_error([0, 1], np.array([0.42, 0.48])) == pytest.approx(0.05)


def test_multiclass_uses_top_label_confidence() -> None:
    outputs = np.array([[0.85, 0.1, 0.05], [0.1, 0.85, 0.05], [0.3, 0.25, 0.45], [0.2, 0.75, 0.05]])
    labels = [0, 1, 0, 1]  # right, right, wrong (confidence 0.45), right
    diagram = reliability_diagram(labels, outputs)
    assert diagram["kind"] == "top-label confidence"
    assert diagram["count"] == [1, 1, 2]
    assert diagram["ece"] == pytest.approx((0.45 + 0.25 + 2 * 0.15) / 4)
    expected_brier = np.mean([0.035, 0.035, 0.49 + 0.0625 + 0.2025, 0.04 + 0.0625 + 0.0025])
    assert brier_score(labels, outputs) == pytest.approx(expected_brier)


def test_classification_metrics_report_brier_and_ece() -> None:
    labels, probabilities = _calibrated_set(200)
    metrics = classification_metrics(labels, probabilities, ["healthy", "tumour"])
    assert metrics["brier"] == pytest.approx(brier_score(labels, probabilities), abs=1e-6)
    assert metrics["ece"] == pytest.approx(expected_calibration_error(labels, probabilities), abs=1e-6)


def test_over_confident_set_gets_temperature_above_one_and_lower_ece() -> None:
    labels, probabilities = _calibrated_set()
    sharp = _over_confident(probabilities, 3.0)
    temperature = fit_temperature(labels, sharp)
    assert temperature == pytest.approx(3.0, rel=0.15)
    calibrated = apply_temperature(sharp, temperature)
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(labels, sharp) / 3
    assert brier_score(labels, calibrated) < brier_score(labels, sharp)
    # an under-confident model is sharpened instead
    assert fit_temperature(labels, _over_confident(probabilities, 0.4)) < 1.0
    # a calibrated one is left nearly alone
    assert fit_temperature(labels, probabilities) == pytest.approx(1.0, abs=0.1)


def test_temperature_agrees_with_scikit_learn() -> None:
    from sklearn.calibration import CalibratedClassifierCV

    labels, probabilities = _calibrated_set(1000, seed=3)
    sharp = _over_confident(probabilities, 2.0)
    if "temperature" not in CalibratedClassifierCV._parameter_constraints["method"][0].options:
        pytest.skip("scikit-learn < 1.8 has no temperature scaling to compare with")
    from sklearn.calibration import _TemperatureScaling

    beta = float(_TemperatureScaling().fit(np.column_stack([1 - sharp, sharp]), labels).beta_)
    assert fit_temperature(labels, sharp) == pytest.approx(1 / beta, rel=1e-3)


def test_temperature_report_gives_before_and_after_on_validation_and_test() -> None:
    labels, probabilities = _calibrated_set(2000, seed=1)
    sharp = _over_confident(probabilities, 2.5)
    report = temperature_report(labels[:1000], sharp[:1000], labels[1000:], sharp[1000:])
    assert report["temperature"] > 1.5
    for part in ("validation", "test"):
        assert report[part]["after"]["ece"] < report[part]["before"]["ece"]
    assert "validation outputs only" in report["method"]


def test_temperature_needs_both_classes() -> None:
    with pytest.raises(DataError, match="two classes"):
        fit_temperature([1, 1, 1], np.array([0.9, 0.8, 0.7]))


def test_tiny_perfectly_separated_set_keeps_temperature_one() -> None:
    """The open_i accident: 11 calibration images, all right, fitted T = 0.012 and every probability
    read 1.0000. Now T stays 1 and the report says why; so it does on a larger set without errors."""
    from medsweep.objectives.metrics import MIN_CALIBRATION_IMAGES, TEMPERATURE_BOUNDS

    labels = np.array([0, 1] * 5 + [1])
    outputs = np.where(labels == 1, 0.8, 0.25)
    report = temperature_report(labels, outputs, labels, outputs)
    assert report["temperature"] == 1.0
    assert report["skipped"] == (f"only 11 validation images to fit the temperature on, fewer than the "
                                 f"{MIN_CALIBRATION_IMAGES} a fit needs")
    assert report["test"]["after"] == report["test"]["before"]
    assert TEMPERATURE_BOUNDS[0] > 0.012  # even unchecked, the fit could not go that far
    many = np.array([0, 1] * 20)
    separated = temperature_report(many, np.where(many == 1, 0.7, 0.3))
    assert separated["temperature"] == 1.0 and "all 40 validation images are classified right" in separated["skipped"]
    one_class = temperature_report(np.ones(30, int), np.full(30, 0.4))
    assert one_class["temperature"] == 1.0 and "of one class" in one_class["skipped"]


def test_a_normal_calibration_set_still_fits_within_the_bounds() -> None:
    from medsweep.objectives.metrics import TEMPERATURE_BOUNDS

    labels, probabilities = _calibrated_set(60, seed=2)
    report = temperature_report(labels, _over_confident(probabilities, 2.5))
    assert "skipped" not in report and 1.3 < report["temperature"] < TEMPERATURE_BOUNDS[1]
    assert report["validation"]["after"]["brier"] < report["validation"]["before"]["brier"]
    # one error among confident right answers: the fit is bounded, never sharper than the lower bound
    nearly = np.array([0, 1] * 15)
    outputs = np.where(nearly == 1, 0.9, 0.1)
    outputs[0] = 0.6  # a negative scored as positive
    assert temperature_report(nearly, outputs)["temperature"] >= TEMPERATURE_BOUNDS[0]


def test_temperature_layer_survives_save_and_load(tmp_path) -> None:
    """The appended layer is part of the .keras file: load_model alone predicts calibrated values."""
    from medsweep.objectives.model import load_model, save_model, with_temperature
    from medsweep.objectives import import_keras

    keras = import_keras()
    for units, activation in ((1, "sigmoid"), (3, "softmax")):
        # image-shaped, as load_model checks a medsweep model takes (size, size, 3)
        inputs = keras.Input(shape=(2, 2, 3))
        outputs = keras.layers.Dense(units, activation=activation, name="output")(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(0).normal(size=(8, 2, 2, 3)).astype(np.float32) * 3
        raw = model.predict(x, verbose=0)
        names = ["a", "b"] if units == 1 else ["a", "b", "c"]
        path = save_model(with_temperature(model, 2.0), tmp_path / f"m{units}.keras", {"class_names": names})
        loaded, _ = load_model(path)
        expected = apply_temperature(raw, 2.0)
        got = loaded.predict(x, verbose=0)
        got = np.column_stack([1 - got[:, 0], got[:, 0]]) if units == 1 else got
        np.testing.assert_allclose(got, expected, atol=1e-4)
