"""A trial's Keras model, built in one place: a frozen trunk, a trainable top of the backbone
(possibly empty) and the template's head (Dense + Dropout, sigmoid for two classes or softmax
for more), compiled with Adam. `build_model` (images in), `build_head` (pooled features in) and
`build_top_model` (a cut point's outputs in) share `add_head`, `compile_model` and
`set_trial_state`, so a cached trial trains exactly the layers a full one does. Which of them a
trial uses is `_trial_plan.plan_trial`'s decision; keeping built models across trials is
`training`'s session's."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import BackboneError, ConfigError
from .._keras import import_keras
from ..config import TrialConfig, get_backbone, keras_weights_folder, resolve_weights

HEAD_LAYERS = ("dense", "output")  # the head's layers with weights, named alike in every model


_MAX_REPLAYED_DRAWS = 200_000


def count_draws(before: object, after: object) -> int:
    """How many `keras` default seeds (Python `random.randint`) the backbone's construction
    drew; -1 when something else consumed Python's random stream."""
    random.setstate(before)  # type: ignore[arg-type]
    for draws in range(_MAX_REPLAYED_DRAWS):
        if random.getstate() == after:
            return draws
        random.randint(1, int(1e9))
    random.setstate(after)  # type: ignore[arg-type]
    return -1


def build_backbone(config: TrialConfig) -> Any:
    """The Keras application for `config`, without its top, with the configured weights."""
    backbone = get_backbone(config.backbone)
    size = config.resolved_image_size
    if size < backbone.min_size:
        raise ConfigError(
            f"image_size {size} is too small for {backbone.name} (minimum {backbone.min_size}); "
            "raise image_size or choose another backbone"
        )
    weights = resolve_weights(backbone, config.weights, size, config.alpha)
    kwargs: dict[str, Any] = {"include_top": False, "weights": weights, "input_shape": (size, size, 3)}
    if backbone.has_alpha:
        kwargs["alpha"] = config.alpha
    try:
        return backbone.constructor_function()(**kwargs)
    except Exception as error:  # Keras raises plain Exception/ValueError/OSError here
        if weights == "imagenet":
            expected = backbone.expected_weights_file(size, config.alpha)
            raise BackboneError(
                f"ImageNet weights for {backbone.name} could not be loaded or downloaded ({type(error).__name__}); "
                f"offline, put {expected} in {keras_weights_folder()} or in a folder and set weights to that folder"
            ) from None
        if weights is not None:
            raise BackboneError(
                f"weights file {weights} does not fit {backbone.name} (alpha {config.alpha:g}): {error}; "
                f"expected {backbone.expected_weights_file(size, config.alpha)}"
            ) from None
        raise


def set_trainable_layers(base: Any, fine_tune_fraction: float, pretrained: bool, batchnorm: str = "frozen") -> Any:
    """Freeze the backbone, then unfreeze the top `fine_tune_fraction` of its layers; returns
    the backbone (a copy when its BatchNormalization layers must change class).

    With pretrained weights `batchnorm` says how the unfrozen BatchNormalization layers train:
    frozen (inference mode, scale and offset fixed), affine (inference-mode statistics, scale and
    offset trained) or batch (batch statistics while training, moving statistics updated). A
    randomly initialised backbone has no statistics worth keeping: its layers train as batch.
    docs/finetuning.md has the measurements behind the default."""
    keras = import_keras()
    if fine_tune_fraction <= 0:
        base.trainable = False
        return base
    if pretrained and batchnorm == "affine":
        base = _with_frozen_statistics(base)
    base.trainable = True
    layers = base.layers
    first_trainable = int(round(len(layers) * (1.0 - fine_tune_fraction)))
    for index, layer in enumerate(layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first_trainable and not (pretrained and is_batchnorm and batchnorm == "frozen")
    return base


def _with_frozen_statistics(base: Any) -> Any:
    """A copy of `base` (same layer names and weights) whose BatchNormalization layers always
    use their moving statistics, so their scale and offset can train without re-estimating them."""
    keras = import_keras()
    from ._layers import FrozenStatisticsBatchNormalization

    def clone(layer: Any) -> Any:
        if type(layer) is keras.layers.BatchNormalization:
            return FrozenStatisticsBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(base, clone_function=clone)
    copy.set_weights(base.get_weights())
    return copy


def backbone_input(inputs: Any, config: TrialConfig) -> Any:
    """Images -> intensity rescaling -> the backbone's preprocessing: what every trunk starts with."""
    from ._layers import BackbonePreprocess, IntensityRescale

    # float32 whatever the precision policy: the rescaled range must not lose float16 bits.
    x = IntensityRescale(config.intensity, name="intensity", dtype="float32")(inputs)
    return BackbonePreprocess(config.backbone, name="preprocess")(x)


def pooled_trunk(inputs: Any, config: TrialConfig, base: Any, *, inference: bool) -> Any:
    """Images -> intensity rescaling -> the backbone's preprocessing -> backbone -> global
    average pooling: the trunk up to the POOLED cut, for the full model and the feature cache."""
    keras = import_keras()
    x = backbone_input(inputs, config)
    x = base(x, training=False) if inference else base(x)
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def add_head(x: Any, config: TrialConfig, num_classes: int) -> Any:
    """Dense -> Dropout -> output on `x`, the one head every trial trains. Layer order matters:
    each Dense draws its initialiser seed when created, and the cached path replays them."""
    keras = import_keras()
    from ._layers import TrialDropout

    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = TrialDropout(config.dropout, config.seed, name="dropout")(x)
    # float32 output even under a mixed_float16 policy, so probabilities and the loss stay exact.
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="output", dtype="float32")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)


def _check_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")


def compile_model(model: Any, config: TrialConfig, num_classes: int, *, steps_per_execution: int = 1) -> None:
    """The one compile: Adam, cross-entropy, accuracy and Keras' AUC for the training curves;
    the trial's learning rate, dropout and seed come from `set_trial_state`."""
    keras = import_keras()
    if num_classes == 2:
        loss: Any = keras.losses.BinaryCrossentropy()
        metrics: list[Any] = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.AUC(name="auc", multi_label=True, num_labels=num_classes)]
    model.compile(optimizer=_optimizer(model, config), loss=loss, metrics=metrics,
                  steps_per_execution=steps_per_execution)
    set_trial_state(model, config)


def _optimizer(model: Any, config: TrialConfig) -> Any:
    """Adam; BackboneScaledAdam when trainable backbone layers learn slower than the head."""
    keras = import_keras()
    head_paths = [v.path for name in HEAD_LAYERS for v in model.get_layer(name).trainable_weights]
    if config.backbone_lr_factor == 1.0 or len(model.trainable_weights) == len(head_paths):
        return keras.optimizers.Adam()
    from ._layers import BackboneScaledAdam

    return BackboneScaledAdam(backbone_lr_factor=config.backbone_lr_factor, head_paths=head_paths)


def set_trial_state(model: Any, config: TrialConfig, head: dict[str, list[np.ndarray]] | None = None) -> None:
    """Put a compiled model at a trial's starting point: the head weights given (if any), the
    trial's dropout rate and seed, a fresh optimiser state at its learning rate. The only place
    the learning rate reaches a model, so a reused compiled model starts like a new one."""
    if head is not None:
        set_head_weights(model, head)
    model.get_layer("dropout").reset(config.dropout, config.seed)
    optimizer = model.optimizer
    # Adam itself, inside a mixed-precision LossScaleOptimizer, whose loss scale must not be zeroed.
    adam = getattr(optimizer, "inner_optimizer", optimizer)
    if int(adam.iterations):  # a reused model: zero the step count and moments (a new one has them at zero)
        for variable in adam.variables:
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    optimizer.learning_rate = config.learning_rate


def build_model(config: TrialConfig, num_classes: int) -> Any:
    """The full model for `config` (uint8-range RGB images in, class probabilities out), compiled."""
    _check_classes(num_classes)
    keras = import_keras()
    size = config.resolved_image_size
    base = build_backbone(config)
    pretrained = config.weights != "none"
    base = set_trainable_layers(base, config.fine_tune_fraction, pretrained, config.batchnorm)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    # batch: the backbone follows fit's training flag (Keras 3 would override training=False anyway).
    features = pooled_trunk(inputs, config, base, inference=pretrained and config.batchnorm != "batch")
    model = keras.Model(inputs, add_head(features, config, num_classes), name=f"medsweep_{config.backbone}")
    compile_model(model, config, num_classes)
    return model


def build_head(config: TrialConfig, feature_size: int, num_classes: int) -> Any:
    """What lies above the POOLED cut, as a model on the trunk's output (not compiled)."""
    _check_classes(num_classes)
    keras = import_keras()
    inputs = keras.Input(shape=(feature_size,), name="features")
    return keras.Model(inputs, add_head(inputs, config, num_classes), name="medsweep_head")


# Layers after which a cut-point cache may cut: where a convolution unit or a block ends
# (activation, residual sum, concatenation, pooling), not between a convolution and its BatchNorm.
_BLOCK_END_LAYERS = ("ReLU", "Activation", "Add", "Concatenate", "MaxPooling2D", "AveragePooling2D")


@dataclass(frozen=True)
class BackboneCut:
    """Where a cut-point cache cuts a built backbone: below it every layer is frozen; `tensor`
    (the output of layer `name`) is the only tensor that crosses the cut."""

    name: str
    tensor: Any
    shape: tuple[int, ...]  # one image's output at the cut
    index: int  # position in `base.layers` of the first layer above the cut


def backbone_cut(base: Any) -> BackboneCut | None:
    """The highest block boundary below the backbone's first layer that trains (as
    `set_trainable_layers` left it), where exactly one tensor crosses; None when only the
    input lies below it. In a chain (MobileNet, VGG) every block end qualifies; in residual
    nets only block outputs do, and the layers between the cut and the first trainable one run
    frozen in the top model, so the trial trains exactly the layers the full model trains."""
    keras = import_keras()
    layers = base.layers
    frozen_below = next((index for index, layer in enumerate(layers)
                         if layer.trainable and layer.weights), len(layers))
    producer = {id(layer.output): index for index, layer in enumerate(layers)}
    last_use: dict[int, int] = {}
    for index, layer in enumerate(layers[1:], start=1):
        for tensor in keras.tree.flatten(layer.input):
            last_use[id(tensor)] = max(last_use.get(id(tensor), 0), index)
    for tensor in keras.tree.flatten(base.outputs):
        last_use[id(tensor)] = len(layers)
    crossing = [0] * (len(layers) + 1)  # crossing[b]: tensors made below layer b and used at or above it
    for tensor_id, last in last_use.items():
        for boundary in range(producer.get(tensor_id, 0) + 1, last + 1):
            crossing[boundary] += 1
    for boundary in range(min(frozen_below, len(layers) - 1), 1, -1):
        below = layers[boundary - 1]
        if crossing[boundary] == 1 and type(below).__name__ in _BLOCK_END_LAYERS:
            output = below.output
            return BackboneCut(below.name, output, tuple(int(d) for d in output.shape[1:]), boundary)
    return None


def build_top_model(config: TrialConfig, base: Any, cut: BackboneCut, num_classes: int) -> Any:
    """What lies above a BACKBONE cut, compiled: the backbone's layers from the cut (the same
    layer objects, so the same weights and trainable flags), pooling and `add_head`, on the
    cached cut outputs. Pretrained backbones run in inference mode, as in `pooled_trunk`."""
    _check_classes(num_classes)
    keras = import_keras()
    inputs = keras.Input(shape=cut.shape, name="trunk")
    top = keras.Model(cut.tensor, base.output, name=f"{base.name}_top")
    x = top(inputs, training=False) if config.weights != "none" else top(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, add_head(x, config, num_classes), name=f"medsweep_{config.backbone}_top")
    compile_model(model, config, num_classes)
    return model


def full_model_like(config: TrialConfig, base: Any, trained: Any, num_classes: int) -> Any:
    """A `build_model` model (images in) carrying a cut-cached trial's trained backbone and head."""
    keras = import_keras()
    model = build_model(config, num_classes)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    backbone.set_weights(base.get_weights())
    set_head_weights(model, head_weights(trained))
    return model


def head_weights(model: Any) -> dict[str, list[np.ndarray]]:
    return {name: [np.array(w) for w in model.get_layer(name).get_weights()] for name in HEAD_LAYERS}


def set_head_weights(model: Any, weights: dict[str, list[np.ndarray]]) -> None:
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)


def initial_head_weights(config: TrialConfig, feature_size: int, num_classes: int, backbone_draws: int
                         ) -> dict[str, list[np.ndarray]]:
    """The head weights `build_model` would start from, without building the backbone: after
    the seed, replay the `backbone_draws` default seeds the backbone takes (-1: unknown, then
    build the full model once)."""
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    if backbone_draws < 0:
        return head_weights(build_model(config, num_classes))
    for _ in range(backbone_draws):
        random.randint(1, int(1e9))
    return head_weights(build_head(config, feature_size, num_classes))


def with_temperature(model: Any, temperature: float) -> Any:
    """The model with a TemperatureScaling layer appended to its output, so the saved .keras file
    alone predicts calibrated probabilities (`load_model` registers the layer)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature {temperature!r} must be a positive number")
    keras = import_keras()
    from ._layers import TemperatureScaling

    # float32 like the output layer, so log(1 - 1e-7) does not round to 0 under mixed_float16
    outputs = TemperatureScaling(float(temperature), name="temperature", dtype="float32")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=model.name)


def average_models(members: list[Any], name: str = "medsweep_ensemble") -> Any:
    """One model (images in, class probabilities out) that averages `members`' probabilities:
    a fold ensemble saved, loaded and used for prediction like a single model."""
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
    keras = import_keras()
    shape = tuple(members[0].input_shape[1:])
    inputs = keras.Input(shape=shape, name="image")
    outputs = []
    for number, member in enumerate(members, start=1):
        member.name = f"member_{number}"  # nested models need distinct names
        outputs.append(member(inputs))
    # float32, like every member's output layer, whatever the precision policy
    return keras.Model(inputs, keras.layers.Average(name="average", dtype="float32")(outputs), name=name)
