"""What a trial is: `TrialConfig` (every knob of one training run, validated, round-tripping
through YAML) and the backbone registry (which Keras application, its minimum input size, which
weights files exist for it). No Keras import."""

from ._backbones import (BACKBONES, Backbone, WeightsFile, find_weights_file, get_backbone, keras_weights_folder,
                         resolve_weights)
from ._trial_config import (BATCHNORM_MODES, CLASS_WEIGHTS, CONFIG_FIELDS, DEFAULT_CONFIG, INTENSITIES, TrialConfig,
                            check_config_value, config_field_type)

__all__ = [
    "BACKBONES",
    "BATCHNORM_MODES",
    "Backbone",
    "CLASS_WEIGHTS",
    "CONFIG_FIELDS",
    "DEFAULT_CONFIG",
    "INTENSITIES",
    "TrialConfig",
    "WeightsFile",
    "check_config_value",
    "config_field_type",
    "find_weights_file",
    "get_backbone",
    "keras_weights_folder",
    "resolve_weights",
]
