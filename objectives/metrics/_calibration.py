"""Are the probabilities honest? Brier score, expected calibration error (ECE), reliability-diagram
data, and temperature scaling fitted on validation outputs only.

Binning (stated once, used everywhere): 10 equal-width bins over [0, 1], scikit-learn's
`calibration_curve(strategy="uniform")`. Two classes: the probability of the positive class (the
second, sorted folder name) against the share of positives in each bin. Three or more classes: the
top-label confidence (highest probability) against the share of correct predictions (Guo et al.
2017). ECE = sum over non-empty bins of (images in bin / images) * |observed - predicted|."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._errors import ConfigError, DataError
from ._outputs import class_probabilities
from ._png_mark import png_mark

ECE_BINS = 10
CALIBRATION_BINNING = f"{ECE_BINS} equal-width bins over [0, 1] (scikit-learn calibration_curve, strategy uniform)"
# Probabilities are clipped this far from 0 and 1 before taking logs, as classification_metrics does.
_EPSILON = 1e-7
RELIABILITY_PNG_KIND = "reliability diagram"  # the mark in the PNG, so a rerun may replace it
# T is searched in these bounds: at most twice as sharp (a fit below 1 claims the network was
# under-confident, which a small set rarely shows), at most ten times as soft.
TEMPERATURE_BOUNDS = (0.5, 10.0)
# Fewer validation images than this cannot support a fitted T: on 11 images all classified right,
# the fit ran to T = 0.012 and every probability read 1.0000. Then T stays 1, with a warning.
MIN_CALIBRATION_IMAGES = 20


def _reliability_inputs(labels: Sequence[int], outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(binary outcome, predicted probability of it, what is plotted) for the reliability diagram."""
    y_true = np.asarray(labels, dtype=np.int64)
    probabilities = class_probabilities(outputs)
    if len(y_true) != len(probabilities):
        raise DataError(f"{len(y_true)} labels but {len(probabilities)} predictions; pass one prediction per image")
    if probabilities.shape[1] == 2:
        return (y_true == 1).astype(np.int64), probabilities[:, 1], "positive-class probability"
    predicted = probabilities.argmax(axis=1)
    return (predicted == y_true).astype(np.int64), probabilities.max(axis=1), "top-label confidence"


def reliability_diagram(labels: Sequence[int], outputs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Per non-empty bin: mean predicted probability, observed frequency and image count, plus the ECE."""
    from sklearn.calibration import calibration_curve

    outcome, predicted, kind = _reliability_inputs(labels, outputs)
    predicted = np.clip(predicted, 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # pos_label=1 so a set with one outcome only (all correct, say) still has a diagram.
    observed, mean_predicted = calibration_curve(outcome, predicted, pos_label=1, n_bins=n_bins, strategy="uniform")
    counts_all = np.bincount(np.searchsorted(edges[1:-1], predicted), minlength=n_bins)  # sklearn's own binning
    counts = counts_all[counts_all > 0]
    ece = float(np.sum(counts / counts.sum() * np.abs(observed - mean_predicted))) if len(counts) else math.nan
    return {"kind": kind, "bins": n_bins, "binning": CALIBRATION_BINNING.replace(str(ECE_BINS), str(n_bins), 1),
            "predicted": [float(v) for v in mean_predicted], "observed": [float(v) for v in observed],
            "count": [int(v) for v in counts], "ece": ece}


def expected_calibration_error(labels: Sequence[int], outputs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over `n_bins` equal-width bins (see the module docstring for what is binned)."""
    return reliability_diagram(labels, outputs, n_bins)["ece"]


def brier_score(labels: Sequence[int], outputs: np.ndarray) -> float:
    """Brier score (scikit-learn): two classes, mean squared error of P(positive); three or more,
    the mean over images of the squared errors summed over classes."""
    from sklearn.metrics import brier_score_loss

    y_true = np.asarray(labels, dtype=np.int64)
    probabilities = class_probabilities(outputs)
    if probabilities.shape[1] == 2:
        return float(brier_score_loss(y_true, probabilities[:, 1], pos_label=1))
    return float(brier_score_loss(y_true, probabilities, labels=list(range(probabilities.shape[1]))))


def calibration_metrics(labels: Sequence[int], outputs: np.ndarray) -> dict[str, float]:
    """`brier` and `ece` (10 equal-width bins), the keys classification_metrics adds."""
    return {"brier": brier_score(labels, outputs), "ece": expected_calibration_error(labels, outputs)}


def _log_probabilities(outputs: np.ndarray) -> np.ndarray:
    # log p serves as the logits: softmax(log p / T) is the temperature-scaled distribution, and for
    # two classes it equals sigmoid(logit(p) / T), so a sigmoid model needs no separate case.
    probabilities = np.clip(class_probabilities(outputs), _EPSILON, 1.0 - _EPSILON)
    return np.log(probabilities / probabilities.sum(axis=1, keepdims=True))


def apply_temperature(outputs: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities (n, classes) after dividing the logits by `temperature`."""
    from scipy.special import softmax

    return softmax(_log_probabilities(outputs) / float(temperature), axis=1)


def fit_temperature(labels: Sequence[int], outputs: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) on these
    outputs, which must be validation outputs (never test ones): T > 1 softens an over-confident model."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    y_true = np.asarray(labels, dtype=np.int64)
    logits = _log_probabilities(outputs)
    if len(y_true) != len(logits):
        raise DataError(f"{len(y_true)} labels but {len(logits)} predictions; pass one prediction per image")
    if len(np.unique(y_true)) < 2:
        raise DataError("temperature scaling needs validation images of at least two classes; "
                        "use a larger validation split")

    def negative_log_likelihood(log_temperature: float) -> float:
        scaled = log_softmax(logits / math.exp(log_temperature), axis=1)
        return float(-scaled[np.arange(len(y_true)), y_true].mean())

    # Search log T so T stays positive, within TEMPERATURE_BOUNDS.
    low, high = TEMPERATURE_BOUNDS
    found = minimize_scalar(negative_log_likelihood, bounds=(math.log(low), math.log(high)), method="bounded",
                            options={"xatol": 1e-8})
    return float(min(high, max(low, math.exp(found.x))))


def calibration_refusal(labels: Sequence[int], outputs: np.ndarray) -> str | None:
    """Why these validation outputs cannot support a fitted temperature (then T stays 1), or None.

    A fit needs enough images, more than one class, and at least one wrong prediction: when every
    image is classified right, each lower T fits better and the fit only stops at its bound, making
    the model as confident as the bound allows on no evidence."""
    y_true = np.asarray(labels, dtype=np.int64)
    count = len(y_true)
    if count < MIN_CALIBRATION_IMAGES:
        return (f"only {count} validation images to fit the temperature on, fewer than the "
                f"{MIN_CALIBRATION_IMAGES} a fit needs")
    present = np.unique(y_true)
    if len(present) < 2:
        return f"all {count} validation images are of one class; a fit needs at least two"
    wrong = int(np.sum(class_probabilities(outputs).argmax(axis=1) != y_true))
    if wrong == 0:
        return (f"all {count} validation images are classified right, so the fit would only sharpen the "
                "probabilities towards 0 and 1 with nothing to stop it; no evidence for a temperature")
    return None


def temperature_report(validation_labels: Sequence[int], validation_outputs: np.ndarray,
                       test_labels: Sequence[int] | None = None, test_outputs: np.ndarray | None = None
                       ) -> dict[str, Any]:
    """Fit T on validation outputs and give Brier and ECE before and after, on validation and
    (when given) on test outputs, for the model card and `train --final --calibrate`. When the
    validation outputs cannot support a fit (`calibration_refusal`), T stays 1 and `skipped` says why."""
    refusal = calibration_refusal(validation_labels, validation_outputs)
    temperature = 1.0 if refusal else fit_temperature(validation_labels, validation_outputs)
    report: dict[str, Any] = {"method": "temperature scaling (Guo et al. 2017), fitted on validation outputs only",
                              "temperature": temperature, "bounds": list(TEMPERATURE_BOUNDS),
                              "binning": CALIBRATION_BINNING}
    if refusal:
        report["skipped"] = refusal
    pairs = [("validation", validation_labels, validation_outputs)]
    if test_labels is not None and test_outputs is not None:
        pairs.append(("test", test_labels, test_outputs))
    for name, labels, outputs in pairs:
        report[name] = {"before": calibration_metrics(labels, outputs),
                        "after": calibration_metrics(labels, apply_temperature(outputs, temperature))}
    return report


def check_plot_path(path: str | Path) -> Path:
    """The plot path, if it names a PNG file (checked before any work is done)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png" or path.is_dir():
        raise ConfigError(f"plot file {path} must be a file ending in .png; pass e.g. --plot reliability.png")
    return path


def reliability_png(diagram: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Draw a reliability diagram (Pillow, no browser needed): the diagonal of perfect calibration,
    each bin's observed frequency against its mean predicted probability (dot area ~ images), and the ECE."""
    from PIL import Image, ImageDraw

    width, height, margin = 480, 480, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    side = width - 2 * margin

    def point(x: float, y: float) -> tuple[float, float]:
        return margin + x * side, height - margin - y * side

    draw.rectangle([point(0, 1), point(1, 0)], outline="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = point(tick, 0)
        draw.line([(x, y), (x, y + 5)], fill="black")
        draw.text((x - 10, y + 8), f"{tick:g}", fill="black")
        x, y = point(0, tick)
        draw.line([(x - 5, y), (x, y)], fill="black")
        draw.text((x - 35, y - 6), f"{tick:g}", fill="black")
    draw.line([point(0, 0), point(1, 1)], fill=(150, 150, 150), width=1)
    centres = [point(p, o) for p, o in zip(diagram["predicted"], diagram["observed"])]
    if len(centres) > 1:
        draw.line(centres, fill=(31, 119, 180), width=2)
    largest = max(diagram["count"], default=1)
    for (x, y), count in zip(centres, diagram["count"]):
        radius = 3 + 7 * math.sqrt(count / largest)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(31, 119, 180))
    predicted_axis = "mean predicted " + ("P(positive)" if diagram["kind"].startswith("positive") else "confidence")
    observed_axis = "observed share of positives" if diagram["kind"].startswith("positive") else "observed accuracy"
    draw.text((margin, height - margin + 25), f"x: {predicted_axis}, {diagram['bins']} equal-width bins",
              fill="black")
    draw.text((margin, 12), (title + "  " if title else "") + f"ECE {diagram['ece']:.3f}", fill="black")
    draw.text((margin, 30), f"y: {observed_axis}; dot area ~ images per bin", fill="black")
    path = check_plot_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=png_mark(RELIABILITY_PNG_KIND))
    return path
