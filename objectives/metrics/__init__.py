"""Numbers about predictions, from NumPy, SciPy and scikit-learn alone (no Keras): the
classification metrics and the objective's names, per-epoch exact metrics, ROC points, intervals
over folds and by bootstrap, calibration (Brier, ECE, temperature scaling, reliability
diagrams), the spread that tells a constant-output model, and the tie test between trials."""

from ._calibration import (CALIBRATION_BINNING, MIN_CALIBRATION_IMAGES, RELIABILITY_PNG_KIND, TEMPERATURE_BOUNDS,
                           apply_temperature, calibration_refusal, brier_score, calibration_metrics,
                           check_plot_path, expected_calibration_error, fit_temperature, reliability_diagram,
                           reliability_png, temperature_report)
from ._classification import (METRIC_DIRECTIONS, SENS_AT_SPEC_PREFIX, classification_metrics, epoch_metrics,
                              parse_objective, sensitivity_at_specificity, threshold_metrics)
from ._intervals import CV_INTERVAL_METHOD, bootstrap_intervals, cv_summary
from ._outputs import class_probabilities
from ._png_mark import PNG_MARK_KEY, mark_png_file, png_kind, png_mark
from ._roc import roc_curve_points
from ._spread import CONSTANT_OUTPUT_SPREAD, constant_output_warning, output_spread
from ._tie_test import TIE_TEST, cheapest, corrected_resampled_t, describe_ties, trials_within_noise

__all__ = [
    "CALIBRATION_BINNING",
    "CONSTANT_OUTPUT_SPREAD",
    "CV_INTERVAL_METHOD",
    "METRIC_DIRECTIONS",
    "MIN_CALIBRATION_IMAGES",
    "PNG_MARK_KEY",
    "RELIABILITY_PNG_KIND",
    "SENS_AT_SPEC_PREFIX",
    "TEMPERATURE_BOUNDS",
    "TIE_TEST",
    "apply_temperature",
    "bootstrap_intervals",
    "brier_score",
    "calibration_metrics",
    "calibration_refusal",
    "cheapest",
    "check_plot_path",
    "class_probabilities",
    "classification_metrics",
    "constant_output_warning",
    "corrected_resampled_t",
    "cv_summary",
    "describe_ties",
    "epoch_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "mark_png_file",
    "output_spread",
    "parse_objective",
    "png_kind",
    "png_mark",
    "reliability_diagram",
    "reliability_png",
    "roc_curve_points",
    "sensitivity_at_specificity",
    "temperature_report",
    "threshold_metrics",
    "trials_within_noise",
]
