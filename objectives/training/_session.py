"""Keras session state, owned here alone: clearing the session between trials, the dtype policy
(mixed precision for live trunks, float32 for cached ones), and the compiled heads and top models
kept across trials. Everything that trains goes through these functions, so whether a session
is cleared, and what survives it, does not depend on call order elsewhere.

Compiled models are kept because tracing a training step costs more than training a head on
cached features (and more than a few epochs above a cut point); a later trial of the same shape
resets one (`model.set_trial_state`) instead of building and tracing it again."""

from __future__ import annotations

import gc
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._keras import import_keras
from ..config import TrialConfig
from ..model import (BackboneCut, backbone_cut, build_backbone, build_head, build_top_model, compile_model,
                     count_draws, initial_head_weights, set_head_weights, set_trainable_layers)
from ._options import MIXED_PRECISION_ENV


def new_session(seed: int) -> None:
    """A cleared session (kept compiled models survive in this module's caches) and the seed."""
    keras = import_keras()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)


def live_session(seed: int) -> None:
    """Before building a model whose trunk runs live: a cleared session (compiled heads and tops
    stay in this module's caches), the worker's precision policy, the trial's seed."""
    keras = import_keras()
    keras.backend.clear_session()
    apply_precision_policy()
    keras.utils.set_random_seed(seed)


def cached_session() -> None:
    """Before training on cached trunk outputs: float32 (cached features must not depend on a
    worker's precision option), and a session cleared without freeing the kept compiled models."""
    keras = import_keras()
    use_float32_policy()
    keras.backend.clear_session(free_memory=False)


def extraction_session(seed: int) -> None:
    """Before building a backbone to compute cached features: a cleared float32 session."""
    keras = import_keras()
    keras.backend.clear_session()
    use_float32_policy()
    keras.utils.set_random_seed(seed)


def release_session() -> None:
    """After a live trial or a feature extraction: free what the session holds."""
    keras = import_keras()
    keras.backend.clear_session()
    gc.collect()


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and the backend's random state from one seed (Keras' own helper)."""
    import_keras().utils.set_random_seed(seed)


def gpu_available() -> bool:
    import_keras()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def apply_precision_policy() -> str:
    """Set Keras' global dtype policy from MEDSWEEP_MIXED_PRECISION; returns the policy name."""
    keras = import_keras()
    wanted = os.environ.get(MIXED_PRECISION_ENV, "0").strip().lower() in ("1", "true", "yes", "on")
    policy = "mixed_float16" if wanted and gpu_available() else "float32"
    if keras.config.dtype_policy().name != policy:
        keras.config.set_dtype_policy(policy)
    return policy


def use_float32_policy() -> None:
    """Feature extraction and head training always run in float32 (cached features must not
    depend on a worker's precision option)."""
    keras = import_keras()
    if keras.config.dtype_policy().name != "float32":
        keras.config.set_dtype_policy("float32")


# Compiled heads kept per (feature size, units, classes): tracing a head's training step costs
# more than training it on cached features, so later trials reset it (`set_trial_state`).
_COMPILED_HEADS: "OrderedDict[tuple[int, int, int], Any]" = OrderedDict()
_MAX_COMPILED_HEADS = 4
HEAD_STEPS_PER_EXECUTION = 256  # callbacks act per epoch, so many tiny steps share one call


def compiled_head(config: TrialConfig, feature_size: int, num_classes: int) -> Any:
    """A compiled `build_head` model for cached trunk outputs, reused across trials; the caller
    sets the trial's state."""
    key = (feature_size, config.dense_units, num_classes)
    model = _COMPILED_HEADS.pop(key, None)
    if model is None:
        model = build_head(config, feature_size, num_classes)
        compile_model(model, config, num_classes, steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    _COMPILED_HEADS[key] = model
    while len(_COMPILED_HEADS) > _MAX_COMPILED_HEADS:
        _COMPILED_HEADS.popitem(last=False)
    return model


@dataclass
class CompiledTop:
    """A compiled `build_top_model` model kept across trials, its backbone and cut, the weights
    it was built with, and the default seeds its backbone drew (for the head's start)."""

    model: Any
    base: Any
    cut: BackboneCut
    start: list[np.ndarray]
    backbone_draws: int


# Compiled top models kept per trial shape: building the backbone and tracing a training step
# cost more than a few epochs above the cut, so later trials of the same backbone, weights, cut
# and head size reset one (`compiled_top`) instead.
_COMPILED_TOPS: "OrderedDict[str, CompiledTop]" = OrderedDict()
_MAX_COMPILED_TOPS = 2


# Fields that reach a model only through `set_trial_state`, the data pipeline or the cut
# outputs, so trials differing in them share a compiled top. Any other field (new ones too)
# is part of the key.
_TRIAL_STATE_FIELDS = ("learning_rate", "dropout", "epochs", "batch_size", "class_weight", "oversample",
                       "frozen_warmup_epochs", "augmentation", "augmented_views", "feature_cache", "intensity")


def _top_key(config: TrialConfig, num_classes: int, jit_compile: bool | None) -> str:
    values = config.to_dict()
    for name in _TRIAL_STATE_FIELDS:
        values.pop(name, None)
    if config.weights != "none":  # pretrained: the seed only decides the head's start, replayed
        values.pop("seed", None)
    return repr((sorted(values.items()), num_classes, jit_compile))


def compiled_top(config: TrialConfig, num_classes: int, jit_compile: bool | None) -> CompiledTop | None:
    """The compiled top model for a cut-cached trial, at the weights `build_model` would start
    from with `config.seed` (the caller sets the trial's state); None when the backbone offers
    no cacheable cut. Built once per trial shape, then reset."""
    keras = import_keras()
    key = _top_key(config, num_classes, jit_compile)
    top = _COMPILED_TOPS.pop(key, None)
    if top is None:
        keras.backend.clear_session(free_memory=False)  # keeps the compiled heads and tops
        seed_everything(config.seed)
        before = random.getstate()
        base = build_backbone(config)
        draws = count_draws(before, random.getstate())
        base = set_trainable_layers(base, config.fine_tune_fraction, config.weights != "none", config.batchnorm)
        cut = backbone_cut(base)
        if cut is None:
            return None
        model = build_top_model(config, base, cut, num_classes)
        if jit_compile is not None:
            model.jit_compile = jit_compile
        top = CompiledTop(model, base, cut, model.get_weights(), draws)
    else:
        top.model.set_weights(top.start)
        feature_size = int(top.model.get_layer("pool").output.shape[-1])
        set_head_weights(top.model, initial_head_weights(config, feature_size, num_classes, top.backbone_draws))
    _COMPILED_TOPS[key] = top
    while len(_COMPILED_TOPS) > _MAX_COMPILED_TOPS:
        _COMPILED_TOPS.popitem(last=False)
    return top
