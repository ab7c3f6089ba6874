"""The template's transfer-learning model: backbone, global average pooling, Dense + Dropout
head, sigmoid (two classes) or softmax (three or more) output, Adam."""

from __future__ import annotations

from typing import Any

from ._backbones import get_backbone, resolve_weights
from ._config import TrialConfig
from ._errors import BackboneError, ConfigError
from ._keras import import_keras


def _build_backbone(config: TrialConfig) -> Any:
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
                f"offline, put {expected} in ~/.keras/models or in a folder and set weights to that folder"
            ) from None
        if weights is not None:
            raise BackboneError(
                f"weights file {weights} does not fit {backbone.name} (alpha {config.alpha:g}): {error}; "
                f"expected {backbone.expected_weights_file(size, config.alpha)}"
            ) from None
        raise


def _set_trainable_layers(base: Any, fine_tune_fraction: float, pretrained: bool) -> None:
    """Freeze the backbone, then unfreeze the top `fine_tune_fraction` of its layers.

    With pretrained weights, BatchNormalization layers stay frozen (and run in inference mode)
    because re-estimating their statistics on a few dozen images destroys the pretrained
    features; a randomly initialised backbone has no statistics worth keeping."""
    keras = import_keras()
    if fine_tune_fraction <= 0:
        base.trainable = False
        return
    base.trainable = True
    layers = base.layers
    first_trainable = int(round(len(layers) * (1.0 - fine_tune_fraction)))
    for index, layer in enumerate(layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first_trainable and not (pretrained and is_batchnorm)


def build_model(config: TrialConfig, num_classes: int) -> Any:
    """Build and compile the model for `config` and `num_classes` classes."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    keras = import_keras()
    from ._layers import BackbonePreprocess

    size = config.resolved_image_size
    base = _build_backbone(config)
    pretrained = config.weights != "none"
    _set_trainable_layers(base, config.fine_tune_fraction, pretrained)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = BackbonePreprocess(config.backbone, name="preprocess")(inputs)
    x = base(x, training=False) if pretrained else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(x)
    # float32 output even under a mixed_float16 policy, so probabilities and the loss stay exact.
    if num_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="output", dtype="float32")(x)
        loss: Any = keras.losses.BinaryCrossentropy()
        metrics: list[Any] = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.AUC(name="auc", multi_label=True, num_labels=num_classes)]
    model = keras.Model(inputs, outputs, name=f"medsweep_{config.backbone}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss,
                  metrics=metrics)
    return model
