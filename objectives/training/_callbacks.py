"""Keras callbacks every fit uses: exact validation metrics after each epoch (written into the
logs, so pruning and the curves see them), the epoch-by-epoch record, and the divergence check.
Importing this module imports Keras."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from .._errors import TrainingDiverged
from ..metrics import epoch_metrics

_VALIDATION_CHUNK = 1024


class EpochHistory(keras.callbacks.Callback):
    """Records every epoch's logs as they happen, so a trial stopped early (pruned, killed)
    still has the curves it reached."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


def predict_outputs(model: keras.Model, inputs: Any, batch_size: int) -> np.ndarray:
    """The model's outputs for validation inputs: a tf.data pipeline of images goes through
    `predict`; an in-memory array (cached trunk outputs) is called directly in large chunks,
    which skips `predict`'s per-call set-up, costlier than a small head's whole epoch."""
    if isinstance(inputs, np.ndarray):
        return np.concatenate([np.asarray(model(inputs[start:start + _VALIDATION_CHUNK], training=False))
                               for start in range(0, len(inputs), _VALIDATION_CHUNK)])
    return model.predict(inputs, batch_size=batch_size, verbose=0)


def check_finite(values: Any, epoch: int, model: Any, what: str = "outputs") -> None:
    """Raise TrainingDiverged when a model's `what` (outputs, loss) are NaN or infinite after `epoch`."""
    if np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        return
    rate = getattr(getattr(model, "optimizer", None), "learning_rate", None)
    try:
        rate_text = f" (was {float(np.asarray(rate)):.3g})" if rate is not None else ""
    except (TypeError, ValueError):
        rate_text = ""
    raise TrainingDiverged(f"training diverged at epoch {epoch}: the {what} are NaN or infinite; "
                           f"lower learning_rate{rate_text}")


class ExactValidation(keras.callbacks.Callback):
    """Measures the validation set exactly after every epoch (`metrics.epoch_metrics`) and
    writes `val_loss`, `val_accuracy`, `val_auc` and `val_balanced_accuracy` into the epoch's logs.

    Keras' own AUC buckets scores into fixed thresholds, so a model whose outputs sit in a
    narrow band reports 0.5 every epoch while the exact AUC is 0.69: the pruner then compares
    ties and never prunes, and the curves disagree with the trial's final value. Placed first,
    the callbacks after it (pruning, history) see the exact values."""

    def __init__(self, inputs: Any, labels: Any, num_classes: int, batch_size: int) -> None:
        super().__init__()
        self.inputs = inputs
        self.labels = np.asarray(labels)
        self.num_classes = num_classes
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        outputs = predict_outputs(self.model, self.inputs, self.batch_size)
        check_finite(outputs, epoch + 1, self.model)
        for name, value in epoch_metrics(self.labels, outputs, self.num_classes).items():
            if value is not None:
                logs[f"val_{name}"] = value
