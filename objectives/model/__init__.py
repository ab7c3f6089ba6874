"""A trial's Keras model: the plan of how it trains (`plan_trial`: live or cached trunk, where
the trainable part begins), the one builder (backbone, trainable top, head, compile, cut point),
medsweep's layers, and saving and loading a model with its metadata. Importing this package does
not import Keras; building or loading a model does, and so does asking for a layer class."""

from typing import Any

from ._builder import (HEAD_LAYERS, BackboneCut, average_models, backbone_cut, backbone_input, build_backbone, build_head,
                       build_model, build_top_model, compile_model, count_draws, full_model_like, head_weights,
                       initial_head_weights, pooled_trunk, set_head_weights, set_trainable_layers, set_trial_state,
                       with_temperature)
from ._saved import load_model, read_model_metadata, save_model, update_model_metadata
from ._trial_plan import BACKBONE, CACHED, LIVE, POOLED, TrialPlan, plan_trial

_LAYERS = ("BackbonePreprocess", "BackboneScaledAdam", "FrozenStatisticsBatchNormalization", "IntensityRescale",
           "TemperatureScaling", "TrialDropout")

__all__ = [
    "BACKBONE",
    "BackboneCut",
    "CACHED",
    "HEAD_LAYERS",
    "LIVE",
    "POOLED",
    "TrialPlan",
    "average_models",
    "backbone_cut",
    "backbone_input",
    "build_backbone",
    "build_head",
    "build_model",
    "build_top_model",
    "compile_model",
    "count_draws",
    "full_model_like",
    "head_weights",
    "initial_head_weights",
    "load_model",
    "plan_trial",
    "pooled_trunk",
    "read_model_metadata",
    "save_model",
    "set_head_weights",
    "set_trainable_layers",
    "set_trial_state",
    "update_model_metadata",
    "with_temperature",
    *_LAYERS,
]


def __getattr__(name: str) -> Any:
    # The layer classes subclass Keras' own, so they are imported (with Keras) only when asked for.
    if name in _LAYERS:
        from .._keras import import_keras

        import_keras()
        from . import _layers

        return getattr(_layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
