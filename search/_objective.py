"""The Optuna objective: sample a TrialConfig, train it through `objectives` with the
optuna-integration Keras pruning callback, and write the trial record the design names."""

from __future__ import annotations

from typing import Any, Sequence

import optuna

from objectives import ImageDataset

from ._study import StudySettings

# The Keras log each objective is pruned on (balanced accuracy has no per-epoch Keras metric).
PRUNING_MONITOR = {"auc": "val_auc", "accuracy": "val_accuracy", "loss": "val_loss",
                   "balanced_accuracy": "val_accuracy"}
HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "auc", "val_auc")


def _history_record(history: dict[str, list[float]]) -> dict[str, list[float]]:
    return {key: [round(v, 6) for v in history.get(key, [])] for key in HISTORY_KEYS}


def describe_exception(error: BaseException) -> str:
    """One line for a failed trial's `fail_reason`."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


class TrialObjective:
    """Callable objective for `study.optimize`; the dataset decodes each image size once."""

    def __init__(self, settings: StudySettings, dataset: ImageDataset, callbacks: Sequence[Any] = ()) -> None:
        self.settings = settings
        self.dataset = dataset
        self.space = settings.search_space
        # Keras callbacks the worker adds to every fit (stop on SIGTERM, progress per epoch).
        self.callbacks = list(callbacks)

    def __call__(self, trial: optuna.Trial) -> float:
        from optuna_integration.keras import KerasPruningCallback

        from objectives import EpochHistory, train_trial

        recorder = EpochHistory()
        try:
            config = self.space.suggest(trial)
            trial.set_user_attr("config", config.to_dict())
            data = self.dataset.arrays(config.resolved_image_size)
            pruning = KerasPruningCallback(trial, PRUNING_MONITOR[self.settings.metric])
            result = train_trial(config, data, [recorder, pruning, *self.callbacks])
        except optuna.TrialPruned:
            trial.set_user_attr("history", _history_record(recorder.history))
            raise
        except Exception as error:
            trial.set_user_attr("history", _history_record(recorder.history))
            trial.set_user_attr("fail_reason", describe_exception(error))
            raise
        trial.set_user_attr("history", _history_record(result.history))
        trial.set_user_attr("metrics", result.metrics)
        value = result.metrics.get(self.settings.metric)
        if value is None:
            reason = f"metric {self.settings.metric} is undefined on this validation set"
            trial.set_user_attr("fail_reason", reason)
            raise ValueError(reason)
        return float(value)
