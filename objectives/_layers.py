"""Keras pieces medsweep adds to a model; imported only when building or loading one."""

from __future__ import annotations

from typing import Any

import keras

from ._backbones import get_backbone


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


class EpochHistory(keras.callbacks.Callback):
    """Records every epoch's logs as they happen, so a trial stopped early (pruned, killed)
    still has the curves it reached."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


def augmentation_block(seed: int) -> keras.Sequential:
    """The template's ImageDataGenerator settings (shear 0.2, zoom 0.2, rotation 20 degrees,
    shifts 0.2, horizontal flip) as Keras preprocessing layers, active only in training."""
    return keras.Sequential(
        [
            keras.layers.RandomShear(x_factor=0.2, y_factor=0.2, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 3),
            keras.layers.RandomFlip("horizontal", seed=seed + 4),
        ],
        name="augmentation",
    )


class ExactValidation(keras.callbacks.Callback):
    """Measures the validation set exactly (scikit-learn) after every epoch and writes
    `val_loss`, `val_accuracy`, `val_auc` and `val_balanced_accuracy` into the epoch's logs.

    Keras' own AUC buckets scores into fixed thresholds, so a model whose outputs sit in a
    narrow band reports 0.5 every epoch while the exact AUC is 0.69: the pruner then compares
    ties and never prunes, and the curves disagree with the trial's final value. Placed first,
    the callbacks after it (pruning, history) see the exact values."""

    def __init__(self, inputs: Any, labels: Any, class_names: Any, batch_size: int) -> None:
        super().__init__()
        self.inputs = inputs
        self.labels = labels
        self.class_names = list(class_names)
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from ._metrics import classification_metrics

        if logs is None:
            return
        outputs = self.model.predict(self.inputs, batch_size=self.batch_size, verbose=0)
        metrics = classification_metrics(self.labels, outputs, self.class_names)
        for name in ("loss", "accuracy", "auc", "balanced_accuracy"):
            if metrics.get(name) is not None:
                logs[f"val_{name}"] = metrics[name]
