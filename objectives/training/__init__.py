"""Training one trial: `train_trial` and its one fit-and-measure loop, the input pipeline and
class balance, the feature and cut-point caches, the Keras session (cleared, kept compiled
models, precision policy: `_session` alone owns it) and a worker's per-process options.
Importing this package does not import Keras; training does, and so do the callback classes."""

from typing import Any

from ._balance import class_weights, oversample_indices
from ._feature_cache import (CUT_STORAGE, FEATURE_KEY_FIELDS, HEAD_ONLY_FIELDS, TrunkOutputs, cached_features,
                             cached_trunk_outputs, feature_key)
from ._options import MIXED_PRECISION_ENV, XLA_CHOICES, XLA_ENV, jit_compile_setting, set_worker_options
from ._pipeline import augmentation_block, make_dataset
from ._session import apply_precision_policy, gpu_available, use_float32_policy
from ._train import TrialResult, fit_and_measure, train_trial

_CALLBACKS = ("EpochHistory", "ExactValidation")

__all__ = [
    "CUT_STORAGE",
    "FEATURE_KEY_FIELDS",
    "HEAD_ONLY_FIELDS",
    "MIXED_PRECISION_ENV",
    "TrialResult",
    "TrunkOutputs",
    "XLA_CHOICES",
    "XLA_ENV",
    "apply_precision_policy",
    "augmentation_block",
    "cached_features",
    "cached_trunk_outputs",
    "class_weights",
    "feature_key",
    "fit_and_measure",
    "gpu_available",
    "jit_compile_setting",
    "make_dataset",
    "oversample_indices",
    "set_worker_options",
    "train_trial",
    "use_float32_policy",
    *_CALLBACKS,
]


def __getattr__(name: str) -> Any:
    # Keras callback classes: imported (with Keras) only when asked for.
    if name in _CALLBACKS:
        from .._keras import import_keras

        import_keras()
        from . import _callbacks

        return getattr(_callbacks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
