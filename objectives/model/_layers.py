"""Keras layers and the optimiser medsweep adds to a model, registered for loading saved models;
imported only when building or loading one (importing this module imports Keras)."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from ..config import get_backbone

# Where percentile rescaling clips, as MONAI's ScaleIntensityRangePercentiles is usually set.
PERCENTILE_RANGE = (0.5, 99.5)

@keras.saving.register_keras_serializable(package="medsweep")
class IntensityRescale(keras.layers.Layer):
    """Rescales each image to the full 0-255 range before the backbone's preprocessing.

    `raw` passes images through; `minmax` maps each image's lowest value to 0 and highest to
    255; `percentile` does the same between its 0.5th and 99.5th percentiles and clips outside
    them. All channels of an image share one range (colour ratios stay), and an image with one
    value everywhere becomes 0 instead of dividing by zero (as MONAI does). Inside the model, so
    a saved model applies it in predict and evaluate too."""

    def __init__(self, mode: str = "raw", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from ..config import INTENSITIES

        if mode not in INTENSITIES:
            raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}, got {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        if self.mode == "raw":
            return inputs
        ops = keras.ops
        x = ops.cast(inputs, self.compute_dtype)
        flat = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        if self.mode == "minmax":
            low, high = ops.min(flat, axis=1), ops.max(flat, axis=1)
        else:
            low, high = _percentiles(flat)
        low, high = ops.reshape(low, (-1, 1, 1, 1)), ops.reshape(high, (-1, 1, 1, 1))
        spread = high - low
        scale = ops.where(spread > 0, 255.0 / ops.maximum(spread, 1e-6), ops.zeros_like(spread))
        return (ops.clip(x, low, high) - low) * scale

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def _percentiles(flat: Any) -> tuple[Any, Any]:
    """Each row's PERCENTILE_RANGE percentiles, interpolated linearly between order statistics
    as `numpy.percentile` does. Only the tails are ranked (`top_k` from each end): the same
    values as a full sort (`keras.ops.quantile`), about five times faster at 224 px."""
    ops = keras.ops
    n = int(flat.shape[1])
    tail = min(n, int(math.ceil(PERCENTILE_RANGE[0] / 100.0 * (n - 1))) + 2)
    largest = ops.top_k(flat, tail, sorted=True)[0]  # column j: ascending order statistic n-1-j
    smallest = -ops.top_k(-flat, tail, sorted=True)[0]  # column j: ascending order statistic j
    bounds = []
    for percent, values, from_top in ((PERCENTILE_RANGE[0], smallest, False), (PERCENTILE_RANGE[1], largest, True)):
        position = percent / 100.0 * (n - 1)
        below = math.floor(position)
        above = min(below + 1, n - 1)
        columns = (n - 1 - below, n - 1 - above) if from_top else (below, above)
        lower, upper = values[:, columns[0]], values[:, columns[1]]
        bounds.append(lower + (upper - lower) * (position - below))
    return bounds[0], bounds[1]


@keras.saving.register_keras_serializable(package="medsweep")
class BackbonePreprocess(keras.layers.Layer):
    """Applies the backbone's own `preprocess_input` inside the model, so a saved model takes
    raw 0-255 RGB images and needs no separate preprocessing step at prediction time."""

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess = get_backbone(backbone).preprocess_function()

    def call(self, inputs: Any) -> Any:
        return self._preprocess(inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}


@keras.saving.register_keras_serializable(package="medsweep")
class TrialDropout(keras.layers.Layer):
    """Dropout whose rate and seed are variables, so one compiled model serves trials with any
    dropout rate and seed (`_builder.set_trial_state` sets them). Keras' Dropout arithmetic: keep
    a unit where a seeded uniform draw is at least the rate, scale kept units by 1/(1-rate)."""

    def __init__(self, rate: float = 0.5, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_rate = float(rate)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.rate = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial_rate),
                                    trainable=False, name="rate")
        self.supports_masking = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        ops = keras.ops
        rate = ops.cast(self.rate, inputs.dtype)
        draw = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype)
        return inputs * (1.0 / (1.0 - rate)) * ops.cast(draw >= rate, inputs.dtype)

    def reset(self, rate: float, seed: int) -> None:
        """Start a trial: its dropout rate, and the seed stream a fresh layer with `seed` has."""
        self.rate.assign(rate)
        state = self.seed_generator.state
        state.assign(np.asarray([seed, 0], dtype=state.dtype))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.initial_rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="medsweep")
class FrozenStatisticsBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that always normalises with its moving statistics and never updates
    them, while its scale and offset stay trainable (`batchnorm: affine`). Needed because in
    Keras 3 a nested model called with `training=False` inside a functional model still runs in
    training mode under `fit` (the outer call's `training=True` replaces it)."""

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return super().call(inputs, training=False, mask=mask)


@keras.saving.register_keras_serializable(package="medsweep")
class BackboneScaledAdam(keras.optimizers.Adam):
    """Adam with a smaller learning rate for the backbone: every variable not named in
    `head_paths` steps with learning_rate x `backbone_lr_factor`. Scaling the gradients instead
    would do nothing (Adam's step does not depend on the gradient's scale), and one `fit` takes
    one optimizer, so the rate is scaled in `update_step`, the method Keras optimizers extend."""

    def __init__(self, backbone_lr_factor: float = 1.0, head_paths: tuple[str, ...] | list[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone_lr_factor = float(backbone_lr_factor)
        self.head_paths = tuple(head_paths)
        self._scaled: list[bool] = []

    def build(self, variables: Any) -> None:
        super().build(variables)
        head = set(self.head_paths)
        self._scaled = [variable.path not in head for variable in variables]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        # The optimizer's own index of the variable (as Adam uses it for its moments).
        if self._scaled[self._get_variable_index(variable)]:
            learning_rate = learning_rate * self.backbone_lr_factor
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone_lr_factor": self.backbone_lr_factor,
                "head_paths": list(self.head_paths)}


@keras.saving.register_keras_serializable(package="medsweep")
class TemperatureScaling(keras.layers.Layer):
    """Divides the logits behind a sigmoid or softmax output by a fitted temperature, so the
    saved model predicts calibrated probabilities with no step outside the .keras file."""

    def __init__(self, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        probabilities = ops.clip(inputs, 1e-7, 1.0 - 1e-7)
        if inputs.shape[-1] == 1:  # sigmoid output: sigmoid(logit(p) / T)
            return ops.sigmoid((ops.log(probabilities) - ops.log(1.0 - probabilities)) / self.temperature)
        return ops.softmax(ops.log(probabilities) / self.temperature, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}




