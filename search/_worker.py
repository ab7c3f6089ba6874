"""A worker: runs trials of one study until the study's total budget or a time limit is
reached. Failed trials are recorded and skipped; N failures in a row stop the worker."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives import ImageDataset

from ._errors import StudyError, WorkerError
from ._objective import TrialObjective
from ._study import load_study

_logger = logging.getLogger("medsweep.worker")

# States that use up the study's budget: finished ones and ones a worker is running now.
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


@dataclass
class WorkerSummary:
    trials: list[FrozenTrial] = field(default_factory=list)
    stop_reason: str = ""

    def count(self, state: TrialState) -> int:
        return sum(1 for t in self.trials if t.state == state)


def budget_used(study: optuna.Study) -> int:
    """Trials that count towards the study's total budget, across all workers."""
    return len(study.get_trials(deepcopy=False, states=BUDGET_STATES))


def open_dataset(settings: Any, data_dir: str | None = None, val_dir: str | None = None) -> ImageDataset:
    """Open the study's data (or the same data under another path) and check its fingerprint."""
    spec = settings.data
    if data_dir:
        from dataclasses import replace

        spec = replace(spec, data_dir=data_dir, val_dir=val_dir or spec.val_dir)
    dataset = ImageDataset.open(spec)
    if dataset.fingerprint["content_hash"] != settings.fingerprint["content_hash"]:
        raise StudyError(
            f"the images in {spec.data_dir} differ from the ones the study was created with "
            f"({dataset.fingerprint['file_count']} files vs {settings.fingerprint['file_count']}); "
            "point --data at the study's data or create a new study"
        )
    return dataset


def run_worker(storage: Any, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
               max_consecutive_failures: int = 3, data_dir: str | None = None, val_dir: str | None = None,
               on_trial: Callable[[FrozenTrial], None] | None = None) -> WorkerSummary:
    """Run trials until `n_trials` exist in the study (all workers together) or `timeout` passes."""
    study, settings = load_study(storage, study_name)
    dataset = open_dataset(settings, data_dir, val_dir)
    objective = TrialObjective(settings, dataset)
    summary = WorkerSummary()
    deadline = None if timeout is None else time.monotonic() + timeout
    consecutive_failures = 0

    def record(_: optuna.Study, trial: FrozenTrial) -> None:
        summary.trials.append(trial)
        if on_trial is not None:
            on_trial(trial)

    while True:
        if n_trials is not None and budget_used(study) >= n_trials:
            summary.stop_reason = f"the study has its {n_trials} trials"
            break
        if deadline is not None and time.monotonic() >= deadline:
            summary.stop_reason = f"the {timeout:g} s time limit passed"
            break
        before = len(summary.trials)
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[record], gc_after_trial=True)
        if len(summary.trials) == before:
            continue
        last = summary.trials[-1]
        consecutive_failures = consecutive_failures + 1 if last.state == TrialState.FAIL else 0
        if consecutive_failures >= max_consecutive_failures:
            reason = last.user_attrs.get("fail_reason", "see the worker log")
            raise WorkerError(
                f"{consecutive_failures} trials in a row failed (last, trial {last.number}: {reason}); "
                "fix the cause and start the worker again (`medsweep status` lists each reason)"
            )
    return summary
