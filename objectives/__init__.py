"""What one trial does: data, backbones, model, training and metrics. Knows Keras, never Optuna.

Importing this package does not import TensorFlow; training functions import it on first use."""

from __future__ import annotations

from typing import Any

from ._backbones import BACKBONES, Backbone, get_backbone, resolve_weights
from ._config import CONFIG_FIELDS, DEFAULT_CONFIG, TrialConfig, check_config_value, config_field_type
from ._data import (
    DataSpec,
    ImageDataset,
    LabeledFiles,
    TrialData,
    decode_image,
    decode_images,
    scan_image_folder,
    stratified_split,
)
from ._errors import BackboneError, ConfigError, DataError, ObjectiveError, TrainingDiverged
from ._intensity import INTENSITY_CHOICES, IntensityReport
from ._balance import class_weights, oversample_indices
from ._ties import TIE_TEST, cheapest, corrected_resampled_t, describe_ties, trials_within_noise
from ._intervals import CV_INTERVAL_METHOD, bootstrap_intervals, cv_summary
from ._calibration import (
    CALIBRATION_BINNING,
    apply_temperature,
    brier_score,
    calibration_metrics,
    check_plot_path,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
    reliability_png,
    temperature_report,
)
from ._explain import (
    Explanation,
    ExplainError,
    check_images,
    colourise,
    default_target_layer,
    example_rows,
    overlay,
    png_bytes,
    png_data_uri,
)
from ._evaluate import (
    SEEN_IMAGES_KEY,
    Evaluation,
    SeenImages,
    evaluate_model,
    final_model_seen_images,
    open_labeled,
    predict_probabilities,
    seen_image_hashes,
    seen_images,
)
from ._manifest import read_manifest
from ._model import TrialPlan, plan_trial, with_temperature
from ._metrics import (
    METRIC_DIRECTIONS,
    SENS_AT_SPEC_PREFIX,
    classification_metrics,
    parse_objective,
    sensitivity_at_specificity,
    threshold_metrics,
)
from ._roc import roc_curve_points
from ._splits import GroupReport, SplitPlan, assign_groups, plan_splits
from ._train import TrialResult, load_model, predict_files, read_model_metadata, save_model, train_trial
from ._cache import CACHE_ENV, ArrayCache, default_cache_dir
from ._runtime import XLA_CHOICES, set_worker_options
from ._transferability import (CandidateScore, linear_probe_score, logme_score, rank_candidates, ranking_table,
                               shortlist)

__all__ = [
    "CandidateScore",
    "linear_probe_score",
    "logme_score",
    "rank_candidates",
    "ranking_table",
    "shortlist",
    "INTENSITY_CHOICES",
    "IntensityReport",
    "TIE_TEST",
    "cheapest",
    "corrected_resampled_t",
    "describe_ties",
    "trials_within_noise",
    "SEEN_IMAGES_KEY",
    "SeenImages",
    "seen_image_hashes",
    "final_model_seen_images",
    "seen_images",
    "Explanation",
    "ExplainError",
    "check_images",
    "colourise",
    "default_target_layer",
    "example_rows",
    "explain_files",
    "example_overlays",
    "grad_cam",
    "overlay",
    "png_bytes",
    "png_data_uri",
    "CALIBRATION_BINNING",
    "apply_temperature",
    "brier_score",
    "calibration_metrics",
    "check_plot_path",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_diagram",
    "reliability_png",
    "temperature_report",
    "with_temperature",
    "roc_curve_points",
    "ArrayCache",
    "CACHE_ENV",
    "XLA_CHOICES",
    "default_cache_dir",
    "set_worker_options",
    "CV_INTERVAL_METHOD",
    "Evaluation",
    "evaluate_model",
    "open_labeled",
    "predict_probabilities",
    "GroupReport",
    "SENS_AT_SPEC_PREFIX",
    "SplitPlan",
    "assign_groups",
    "bootstrap_intervals",
    "class_weights",
    "cv_summary",
    "oversample_indices",
    "parse_objective",
    "plan_splits",
    "read_manifest",
    "sensitivity_at_specificity",
    "threshold_metrics",
    "BACKBONES",
    "Backbone",
    "BackboneError",
    "CONFIG_FIELDS",
    "ConfigError",
    "DEFAULT_CONFIG",
    "DataError",
    "DataSpec",
    "EpochHistory",
    "ImageDataset",
    "LabeledFiles",
    "METRIC_DIRECTIONS",
    "ObjectiveError",
    "TrainingDiverged",
    "TrialConfig",
    "TrialData",
    "TrialPlan",
    "TrialResult",
    "build_model",
    "check_config_value",
    "classification_metrics",
    "config_field_type",
    "decode_image",
    "decode_images",
    "get_backbone",
    "load_model",
    "plan_trial",
    "predict_files",
    "read_model_metadata",
    "resolve_weights",
    "save_model",
    "scan_image_folder",
    "stratified_split",
    "train_trial",
]


def __getattr__(name: str) -> Any:
    # Keras-backed names load TensorFlow, so they are resolved only when asked for.
    if name == "EpochHistory":
        from ._keras import import_keras

        import_keras()
        from ._layers import EpochHistory

        return EpochHistory
    if name in ("grad_cam", "explain_files", "example_overlays"):
        from . import _explain

        return getattr(_explain, name)
    if name == "build_model":
        from ._model import build_model

        return build_model
    raise AttributeError(f"module 'objectives' has no attribute {name!r}")
