"""A study's total budget across every worker, and retries of trials whose worker went away.

A trial uses up the budget when it is finished (complete, pruned, or failed and not retried),
running, or waiting to run (a queued retry). A failed trial that was retried does not count:
its retry does. Workers count and create trials under one storage lock, so the count is exact."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._record import CONFIG, retry_history

# System attribute set on a trial before it is failed for a retry (handed back, or its worker
# died): a failed trial that carries it but whose retry was never queued gets one from the
# next worker, so a process that dies between the two writes loses nothing.
RETRY_ATTR = "medsweep:retry"
_OWN_ATTRS = "medsweep:"  # this worker's bookkeeping on a trial; a retry starts without it
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials that were handed to a retry (some later trial names them)."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(retry_history(trial))
    return numbers


def counts_towards_budget(trial: FrozenTrial, retried: set[int]) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    return trial.state == TrialState.FAIL and trial.number not in retried


def budget_used(study: optuna.Study) -> int:
    """Trials that count towards the study's total budget, across all workers."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(counts_towards_budget(t, retried) for t in trials)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Finished trials that count: complete, pruned, and failed ones that were not retried."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return [t for t in trials if t.state in FINISHED_STATES and counts_towards_budget(t, retried)]


class RetryTrial:
    """Queue a copy of a failed trial (same parameters) unless it was retried `max_retries`
    times already. Used as the storage's heartbeat-stale callback (a worker died) and for
    trials a worker handed back on SIGTERM. Only `config` of the old record is kept."""

    def __init__(self, max_retries: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Queue the retry; False when the retry limit is reached."""
        if len(retry_history(trial)) + 1 > self.max_retries:
            return False
        trimmed = copy.deepcopy(trial)
        trimmed.user_attrs = {k: v for k, v in trial.user_attrs.items() if k == CONFIG}
        trimmed.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(_OWN_ATTRS)}
        self._retry(study, trimmed)
        return True


def make_retry_callback(max_retries: int) -> Any:
    return RetryTrial(max_retries)
