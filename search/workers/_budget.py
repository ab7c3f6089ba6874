"""A study's total budget across every worker, and retries of trials whose worker went away.

A trial uses up the budget when it is finished (complete, pruned, or failed and not retried),
running, or waiting to run (a queued retry). A failed trial that was retried does not count:
its retry does. Workers count and create trials under one storage lock, so the count is exact."""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._record import CONFIG, OWN_SYSTEM_PREFIX, retry_history

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
        trimmed.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(OWN_SYSTEM_PREFIX)}
        self._retry(study, trimmed)
        return True


def make_retry_callback(max_retries: int) -> Any:
    return RetryTrial(max_retries)


# ---------------------------------------------------------------------------------------------
# The study's wall budget (`--budget 30m`): one deadline for every worker on every machine.

BUDGET_SECONDS_ATTR = "medsweep:budget_seconds"  # study system attribute, set by create/worker --budget
DEADLINE_ATTR = "medsweep:deadline"  # study system attribute: unix time the budget ends
BUDGET_STOP_REASON = "the study's wall budget was spent"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The longest duration medsweep takes (budgets, --timeout, --db-down-limit): far beyond any search,
# and far below what timers and deadlines overflow at (a 10^11-hour budget broke every trial).
MAX_DURATION_SECONDS = 30 * 86400.0


def check_seconds(seconds: float, what: str) -> float:
    """`seconds` when it is a number from 0 to MAX_DURATION_SECONDS, else WorkerError naming `what`."""
    import math

    from medsweep.objectives import quoted

    from .._errors import WorkerError

    if not math.isfinite(seconds) or seconds < 0:
        raise WorkerError(f"{what} {quoted(seconds)} is not a number of seconds; give e.g. 3600")
    if seconds > MAX_DURATION_SECONDS:
        raise WorkerError(f"{what} {seconds:,.0f} s is longer than {MAX_DURATION_SECONDS / 86400:g} days, the "
                          f"longest medsweep takes; give at most {MAX_DURATION_SECONDS:.0f} s (30d)")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as parse_duration reads them back: 300 -> '5m', 5400 -> '1h30m', 90 -> '1m30s'."""
    left = round(float(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or f"{float(seconds):g}s"


def parse_duration(text: str | float | int) -> float:
    """Seconds in '30m', '2h', '1800s', '1h30m' or a plain number of seconds (at most 30 days)."""
    import re

    from medsweep.objectives import quoted

    from .._errors import WorkerError

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd]?)", raw)
        if not raw or "".join(n + u for n, u in parts) != raw.replace(" ", ""):
            raise WorkerError(f"budget {quoted(text)} is not a duration; write it like 30m, 2h, 1h30m or 1800s")
        seconds = sum(float(number) * _UNITS[unit or "s"] for number, unit in parts)
    if not seconds > 0:  # also NaN
        raise WorkerError(f"budget {quoted(text)} is not positive; give a duration such as 30m")
    if seconds > MAX_DURATION_SECONDS:
        raise WorkerError(f"budget {quoted(text)} is longer than {MAX_DURATION_SECONDS / 86400:g} days, the longest "
                          "medsweep takes; give at most 30d")
    return seconds


@dataclass(frozen=True)
class WallBudget:
    """The study's wall budget: when it started and when it ends (unix seconds)."""

    start: float
    deadline: float

    @property
    def seconds(self) -> float:
        return self.deadline - self.start

    def left(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)

    def spent_share(self, now: float | None = None) -> float:
        """Share of the budget already spent, 0 to 1."""
        return min(1.0, max(0.0, 1.0 - self.left(now) / self.seconds))


def store_budget_seconds(storage: Any, study_name: str, seconds: float) -> None:
    """Record a budget on the study (create --budget); the first worker to start turns it into a deadline.

    A study that has a budget keeps it: `create --resume --budget` with another duration is an error
    (rewriting it would move the start that `status` derives from the deadline), the same duration
    changes nothing."""
    from .._errors import StudyError

    study_id = storage.get_study_id_from_name(study_name)
    stored = storage.get_study_system_attrs(study_id).get(BUDGET_SECONDS_ATTR)
    if stored is not None and float(stored) != float(seconds):
        raise StudyError(f"study {study_name!r} has a budget of {float(stored):g} s already, not {float(seconds):g} s; "
                         "--resume keeps a study as it was created: repeat its --budget, or choose a new study name")
    if stored is None:
        storage.set_study_system_attr(study_id, BUDGET_SECONDS_ATTR, float(seconds))


def wall_budget(storage: Any, study: optuna.Study, seconds: float | None, lock: Any) -> WallBudget | None:
    """The study's wall budget, starting it now if this is the first worker: under `lock()`, the
    first worker records the deadline (now + budget); later and restarted workers read it, so
    every worker on every machine stops at the same time. None when no budget was ever given."""
    study_id = storage.get_study_id_from_name(study.study_name)
    with lock():
        attrs = storage.get_study_system_attrs(study_id)
        if attrs.get(DEADLINE_ATTR) is not None:
            budget = float(attrs.get(BUDGET_SECONDS_ATTR) or 0.0)
            deadline = float(attrs[DEADLINE_ATTR])
            return WallBudget(deadline - budget, deadline)
        seconds = seconds if seconds is not None else attrs.get(BUDGET_SECONDS_ATTR)
        if seconds is None:
            return None
        now = time.time()
        storage.set_study_system_attr(study_id, BUDGET_SECONDS_ATTR, float(seconds))
        storage.set_study_system_attr(study_id, DEADLINE_ATTR, now + float(seconds))
        return WallBudget(now, now + float(seconds))


def stored_budget_seconds(storage: Any, study_name: str) -> float | None:
    """The wall budget the study was given (create or worker --budget), in seconds, or None."""
    seconds = storage.get_study_system_attrs(storage.get_study_id_from_name(study_name)).get(BUDGET_SECONDS_ATTR)
    return float(seconds) if seconds is not None else None


def read_wall_budget(storage: Any, study_name: str) -> WallBudget | None:
    """The deadline recorded on the study, if a worker started its budget (for status)."""
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(study_name))
    if attrs.get(DEADLINE_ATTR) is None:
        return None
    deadline = float(attrs[DEADLINE_ATTR])
    return WallBudget(deadline - float(attrs.get(BUDGET_SECONDS_ATTR) or 0.0), deadline)


class BudgetSpent(optuna.TrialPruned):
    """Raised at a batch end once the study's wall budget is spent: the trial is recorded pruned."""


def deadline_keras_callback(budget: WallBudget) -> Any:
    """A Keras callback that stops training at the first batch end past the deadline and ends the
    trial as pruned (its partial score never counts as a complete one)."""
    from medsweep.objectives import import_keras

    keras = import_keras()

    class DeadlineCallback(keras.callbacks.Callback):
        def _check(self, *_: Any, **__: Any) -> None:
            if time.time() >= budget.deadline:
                if self.model is not None:
                    self.model.stop_training = True
                raise BudgetSpent("the study's wall budget is spent")

        on_train_batch_end = on_test_batch_end = on_predict_batch_end = on_epoch_begin = _check

    return DeadlineCallback()
