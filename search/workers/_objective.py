"""The Optuna objective: sample a TrialConfig, train it through `objectives` with the
optuna-integration Keras pruning callback, and write the trial record the design names."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import optuna

from medsweep.objectives import TrainingDiverged
from medsweep.objectives.images import ImageDataset
from medsweep.objectives.metrics import classification_metrics, parse_objective, reliability_diagram, roc_curve_points

from .._record import CV_VALIDATION_SHARE, HISTORY_KEYS, TrialRecord, describe_exception
from ..study._study import StudySettings
from ._budget import BudgetSpent

# The Keras log each objective is pruned on (balanced accuracy has no per-epoch Keras metric).
PRUNING_MONITOR = {"auc": "val_auc", "accuracy": "val_accuracy", "loss": "val_loss",
                   "balanced_accuracy": "val_accuracy"}


class TrialObjective:
    """Callable objective for `study.optimize`; the dataset decodes each image size once."""

    def __init__(self, settings: StudySettings, dataset: ImageDataset, callbacks: Sequence[Any] = ()) -> None:
        self.settings = settings
        self.dataset = dataset
        self.space = settings.search_space
        # Keras callbacks the worker adds to every fit (stop on SIGTERM, progress per epoch).
        self.callbacks = list(callbacks)
        self.target_specificity = parse_objective(settings.metric)[2]

    def __call__(self, trial: optuna.Trial) -> float:
        # objectives first: it loads TensorFlow quietly, optuna-integration would load it loudly.
        from medsweep.objectives import train_trial
        from medsweep.objectives.training import EpochHistory
        from optuna_integration.keras import KerasPruningCallback

        if self.settings.data.cv:
            return self._cross_validate(trial)
        recorder = EpochHistory()
        record = TrialRecord(trial)
        try:
            config = self.space.suggest(trial)
            record.config(config.to_dict())
            data = self.dataset.arrays(config.resolved_image_size)
            pruning = KerasPruningCallback(trial, PRUNING_MONITOR.get(self.settings.metric, "val_auc"))
            result = train_trial(config, data, [recorder, pruning, *self.callbacks])
            result.metrics = self._measure(result, data)
        except optuna.TrialPruned as pruned:
            record.history(recorder.history)
            if not isinstance(pruned, BudgetSpent):  # the loop names the budget itself
                monitor = PRUNING_MONITOR.get(self.settings.metric, "val_auc")
                seen = recorder.history.get(monitor) or []
                record.stopped_by(self._pruned_reason(f"epoch {len(seen)}", monitor, seen[-1] if seen else None))
            raise
        except TrainingDiverged as error:
            record.history(recorder.history)
            raise _pruned_for(record, error) from None
        except Exception as error:
            record.history(recorder.history)
            record.fail_reason(describe_exception(error))
            raise
        record.history(result.history)
        record.metrics(result.metrics)
        if result.warning:  # constant outputs: the score ranks rounding noise, not images
            record.warning(result.warning)
        roc = roc_curve_points(data.y_val, result.outputs)  # drawn by `medsweep report`
        if roc is not None:
            record.roc_curve(roc)
        if result.outputs is not None and len(data.y_val):
            record.reliability(reliability_diagram(data.y_val, result.outputs))  # drawn by `medsweep report`
        value = result.metrics.get(self.settings.metric)
        if value is None:
            reason = f"metric {self.settings.metric} is undefined on this validation set"
            record.fail_reason(reason)
            raise ValueError(reason)
        return float(value)

    def _pruned_reason(self, where: str, what: str, value: float | None) -> str:
        """`stopped_by` of a trial the study's pruner stopped: where, at what value, against what
        (status and report show it beside the trial)."""
        against = {"median": "worse than the median of its stage's trials at that step",
                   "hyperband": "in its Hyperband bracket"}.get(self.settings.pruner, "by the study's pruner")
        shown = f" {value:.4f}" if value is not None else ""
        return f"pruned after {where}: {what}{shown}, {against}"

    def _measure(self, result: Any, data: Any) -> dict[str, Any]:
        """The run's validation metrics, plus sensitivity at the study's target specificity
        (threshold chosen on this validation data) when that is the objective."""
        if self.target_specificity is None or result.outputs is None:
            return result.metrics
        return classification_metrics(data.y_val, result.outputs, data.class_names,
                                      target_specificity=self.target_specificity)

    def _cross_validate(self, trial: optuna.Trial) -> float:
        """Train every fold; report the running mean after each fold as the intermediate value,
        so the pruner stops a trial that is clearly worse after two folds."""
        from medsweep.objectives import train_trial
        from medsweep.objectives.training import EpochHistory

        metric = self.settings.metric
        folds = _FoldRecord(bounded=self.settings.direction == "maximize")
        recorder = None
        record = TrialRecord(trial)
        try:
            config = self.space.suggest(trial)
            record.config(config.to_dict())
            for step, data in enumerate(self.dataset.folds(config.resolved_image_size)):
                recorder = EpochHistory()
                result = train_trial(config, data, [recorder, *self.callbacks])
                if result.warning:
                    record.warning(f"fold {step + 1}: {result.warning}")
                metrics = self._measure(result, data)
                value = metrics.get(metric)
                if value is None:
                    raise ValueError(f"metric {metric} is undefined on validation fold {step + 1}")
                share = len(data.y_val) / (len(data.y_val) + len(data.y_train))
                folds.add(recorder.history, metrics, float(value), share, data.y_val, result.outputs)
                recorder = None
                trial.report(float(np.mean(folds.values)), step)
                if trial.should_prune():
                    folds.write(trial)
                    record.stopped_by(self._pruned_reason(f"fold {step + 1} of {self.dataset.fold_count}",
                                                          f"the running mean {metric}", float(np.mean(folds.values))))
                    raise optuna.TrialPruned(f"mean {metric} {np.mean(folds.values):.4f} after fold {step + 1}")
        except optuna.TrialPruned:
            raise
        except Exception as error:
            if recorder is not None:
                folds.histories.append(recorder.history)
            folds.write(trial)
            if isinstance(error, TrainingDiverged):
                raise _pruned_for(record, error) from None
            record.fail_reason(describe_exception(error))
            raise
        return float(folds.write(trial)["mean"])


def _pruned_for(record: TrialRecord, error: TrainingDiverged) -> optuna.TrialPruned:
    """A diverged trial is a bad configuration, not a fault: pruned (samplers learn from pruned
    trials and ignore failed ones, and the worker goes on), with the reason in `stopped_by`."""
    record.stopped_by(str(error))
    return optuna.TrialPruned(str(error))


class _FoldRecord:
    """Per-fold results of one cross-validated trial, written as the trial record: `cv`,
    `metrics` (fold means; confusion matrices summed) and `history` (fold mean per epoch)."""

    def __init__(self, bounded: bool = True) -> None:
        self.bounded = bounded  # every maximised objective lies in [0, 1]; loss in [0, inf)
        self.histories: list[dict[str, list[float]]] = []
        self.metrics: list[dict[str, Any]] = []
        self.values: list[float] = []
        self.shares: list[float] = []
        # Every fold's validation labels and outputs, pooled into one reliability diagram: each
        # development image is validated once per repeat, so the pool is the whole development set.
        self.labels: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []

    def add(self, history: dict[str, list[float]], metrics: dict[str, Any], value: float, share: float,
            labels: Any = None, outputs: Any = None) -> None:
        self.histories.append(history)
        self.metrics.append(metrics)
        self.values.append(value)
        self.shares.append(share)
        if labels is not None and outputs is not None and len(labels):
            self.labels.append(np.asarray(labels))
            self.outputs.append(np.asarray(outputs))

    def write(self, trial: optuna.Trial) -> dict[str, Any]:
        from medsweep.objectives.metrics import cv_summary

        record = TrialRecord(trial)
        record.history(_mean_history(self.histories))
        if not self.values:
            return {}
        share = float(np.mean(self.shares))
        summary = cv_summary(self.values, share, (0.0, 1.0) if self.bounded else (0.0, math.inf))
        record.cv({**summary, CV_VALIDATION_SHARE: share})
        record.metrics(_mean_metrics(self.metrics))
        if self.outputs:
            record.reliability(reliability_diagram(np.concatenate(self.labels), np.concatenate(self.outputs)))
        return summary


def _mean_history(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for key in HISTORY_KEYS:
        longest = max((len(h.get(key, [])) for h in histories), default=0)
        merged[key] = [float(np.mean([h[key][epoch] for h in histories if len(h.get(key, [])) > epoch]))
                       for epoch in range(longest)]
    return merged


def _mean_metrics(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Each scalar metric's mean over folds (leaving out folds where it is undefined), the
    confusion matrices summed over folds, and the number of folds."""
    merged: dict[str, Any] = {}
    for name in fold_metrics[0]:
        values = [m.get(name) for m in fold_metrics]
        if name == "confusion_matrix":
            merged[name] = np.sum([np.asarray(v) for v in values], axis=0).tolist()
        elif all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            defined = [float(v) for v in values if v is not None]
            merged[name] = float(np.mean(defined)) if defined else None
        else:
            merged[name] = values[0]
    merged["n"] = int(sum(m.get("n", 0) for m in fold_metrics))
    merged["folds"] = len(fold_metrics)
    return merged
