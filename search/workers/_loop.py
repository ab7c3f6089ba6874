"""One worker process's loop: take the next trial of the study's total budget under the storage
lock, train it with a heartbeat, and hand it back for a retry when the process is told to stop
(SIGTERM from a preempted node, Ctrl-C). Trials of dead workers are failed and queued for a
retry by whichever worker looks next (the storage's heartbeats). A trial is marked for its retry
before it is failed, so a process killed between the two writes leaves a state the next worker
repairs: no moment of a worker's life loses a trial (tests/workers/test_fault_injection.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from medsweep.storage import StorageError, heartbeat, heartbeat_grace, heartbeat_interval, stale_trial_ids, storage_lock

from ._budget import (BUDGET_STOP_REASON, BudgetSpent, RetryTrial, counts_towards_budget,
                      retried_numbers)
from .._errors import WorkerError
from .._record import (FAIL_REASON, FIXED_PARAMS, RETRY_MARK, STAGE, STOPPED_BY, WORKER, describe_exception, fail_reason_of,
                      retried_from, stage_of_fraction, worker_of)
from ._progress import Progress, StudyProgress, study_progress

_logger = logging.getLogger("medsweep.worker")

# How long a worker told to stop may take before it leaves without handing its trial back
# (another worker then retries it after the heartbeat grace period): inside the 10 s a
# container runtime or a person waits.
HARD_STOP_SECONDS = 8.5
# How long past the study's deadline a trial may go on before its worker records it pruned and
# leaves: the deadline callback stops training at a batch end, but building a model, tracing its
# first step or a long C call may not reach one in time on a loaded machine.
DEADLINE_GRACE_SECONDS = 8.0
WAIT_POLL_SECONDS = 2.0


WORKER_ATTR = WORKER  # trial system attribute: which process ran (or runs) the trial


def worker_name() -> str:
    """host, process id and supervisor label of this worker, e.g. 'gpu-node-3 pid 4242 gpu1'."""
    import socket

    label = os.environ.get("MEDSWEEP_WORKER_LABEL", "")
    return f"{socket.gethostname()} pid {os.getpid()}" + (f" {label}" if label else "")


class TrialInterrupted(Exception):
    """Raised inside Keras fit at the next batch end after SIGTERM/SIGINT."""


class StopRequest:
    """Set by SIGTERM/SIGINT (or by a caller); the worker stops at the next batch end.

    Python runs signal handlers in the main thread only between bytecodes, so a main thread
    blocked in a long C call would hear of a signal late. The C-level wakeup fd hears of it at
    once: a watcher thread reads it, sets the stop flag and starts the hard-stop timer."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._previous_wakeup = -1
        self._arrivals = 0
        self._told = False
        self._guard = threading.Lock()

    def __call__(self) -> bool:
        return self.event.is_set()

    def request(self, signal_number: int | None = None) -> None:
        if self.event.is_set():
            return
        self.signal_number = signal_number
        self.event.set()
        if signal_number is not None:
            # Should a trial not reach a batch end in time (a long decode, a hung call), leave
            # anyway: the heartbeat stops and another worker retries the trial.
            timer = threading.Timer(HARD_STOP_SECONDS, os._exit, args=(128 + signal_number,))
            timer.daemon = True
            timer.start()

    def _arrived(self, signal_number: int) -> None:
        with self._guard:
            self._arrivals += 1
            first = self._arrivals == 1
        if first:
            self.request(signal_number)
        else:
            _logger.warning("%s again: leaving now", signal.Signals(signal_number).name)
            os._exit(128 + signal_number)

    def _watch(self, read_fd: int) -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for number in data:
                if number in (signal.SIGTERM, signal.SIGINT):
                    self._arrived(number)

    def _handle(self, signal_number: int, _frame: Any) -> None:
        if self._pipe is None:  # no watcher thread: count the signal here
            self._arrived(signal_number)
        if not self._told:
            self._told = True
            print(f"{signal.Signals(signal_number).name}: handing the current trial back for a retry and stopping",
                  flush=True)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._handle)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="medsweep-signals", daemon=True).start()

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            for fd in reversed(self._pipe):
                os.close(fd)  # closing the write end ends the watcher's read
            self._pipe = None

    @property
    def exit_code(self) -> int:
        return 0 if self.signal_number is None else 128 + self.signal_number


def worker_keras_callback(stop: StopRequest, progress: Progress) -> Any:
    """A Keras callback: raise TrialInterrupted at the first batch end after a stop request,
    and report each epoch to the progress display."""
    from medsweep.objectives import import_keras

    keras = import_keras()

    class WorkerCallback(keras.callbacks.Callback):
        def _check(self, *_: Any, **__: Any) -> None:
            if stop():
                raise TrialInterrupted("the worker was told to stop")

        on_train_batch_end = on_test_batch_end = on_predict_batch_end = _check

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            progress.fit_started()  # one fit per fold: names the fold of a cross-validated trial

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._check()
            progress.epoch(epoch + 1, self.params.get("epochs") if self.params else None, dict(logs or {}))

    return WorkerCallback()


def leave_now(code: int) -> None:
    """End the process with `code` once its output is out, skipping interpreter and TensorFlow
    shutdown (seconds under load): a stopped worker's trial is handed back by then, and the
    container runtime kills whatever is still running 10 s after SIGTERM."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@dataclass
class LoopSummary:
    trials: list[FrozenTrial] = field(default_factory=list)
    stop_reason: str = ""
    exit_code: int = 0

    def count(self, state: TrialState) -> int:
        return sum(1 for t in self.trials if t.state == state)


def _fail_stale_trials(study: optuna.Study, storage: Any, study_id: int, retry: RetryTrial) -> None:
    """Fail each running trial whose worker stopped beating (or never beat), with the
    `fail_reason` every failed trial carries, and queue its retry."""
    grace = heartbeat_grace(storage)
    failed = []
    for trial_id in stale_trial_ids(storage, study_id):
        try:
            worker = worker_of(storage.get_trial(trial_id), "its worker")
            _mark_for_retry(storage, trial_id,
                            f"no heartbeat for over {grace:g} s from {worker}: the worker died or lost the database")
            if _tell(study, storage, trial_id, TrialState.FAIL):
                failed.append(trial_id)
        except UpdateFinishedTrialError:
            pass  # another worker got there first, or the trial just finished
    for trial_id in failed:
        retry(study, storage.get_trial(trial_id))


def _tell(study: optuna.Study, storage: Any, trial_id: int, state: TrialState) -> bool:
    """End a running trial through `study.tell` (so the sampler sees it end); False when it had
    ended already (another worker, or the trial itself, got there first)."""
    number = storage.get_trial(trial_id).number
    try:
        study.tell(number, state=state)
    except (UpdateFinishedTrialError, ValueError):  # tell raises ValueError for a trial no longer running
        if storage.get_trial(trial_id).state.is_finished():
            return False
        raise
    return True


def _mark_for_retry(storage: Any, trial_id: int, reason: str) -> None:
    """Say on a running trial that it is to be failed and retried, before failing it: should this
    process die between the failure and the queued retry, the next worker queues the retry."""
    storage.set_trial_system_attr(trial_id, RETRY_MARK, True)
    storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)


def _queue_missing_retries(study: optuna.Study, trials: list[FrozenTrial], retry: RetryTrial) -> bool:
    """Queue the retry of every failed trial marked for one whose retry was never queued (its
    worker died in between); True when one was queued."""
    retried = retried_numbers(trials)
    queued = False
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.system_attrs.get(RETRY_MARK) and trial.number not in retried:
            queued = retry(study, trial) or queued
    return queued


def run_trials(storage: Any, study: optuna.Study, objective: Any, *, n_trials: int | None = None,
               timeout: float | None = None, max_consecutive_failures: int = 3, max_retries: int = 2,
               stop: StopRequest | None = None, progress: Progress | None = None,
               on_trial: Callable[[FrozenTrial], None] | None = None, budget: Any = None,
               plan: Any = None, leave_at_deadline: bool = True) -> LoopSummary:
    """Run trials of `study` until it has `n_trials` finished ones (all workers together, none
    left running or queued), `timeout` passes, the study's wall `budget` (a WallBudget) is
    spent or too short for another trial, or `stop` is requested. `plan` (a StagePlan) picks
    each new trial's stage and queues promotions; with a budget and no plan, an unstaged one.
    `leave_at_deadline`: end this process when a trial overruns the deadline by
    DEADLINE_GRACE_SECONDS without reaching a batch end (worker processes; not library callers).

    `storage` is the RDBStorage the study was loaded from (the lock and heartbeats use it). An
    error marked `fatal` (every trial would hit it) fails its trial and is raised at once."""
    stop = stop or StopRequest()
    progress = progress or Progress("quiet")
    retry = RetryTrial(max_retries)
    summary = LoopSummary()
    deadline = None if timeout is None else time.monotonic() + timeout
    lock_name = f"budget:{study.study_name}"
    study_id = storage.get_study_id_from_name(study.study_name)
    beating = heartbeat_interval(storage) is not None
    consecutive_failures = 0
    waiting_for = -1
    if plan is None and budget is not None:
        from ._plan import StagePlan

        plan = StagePlan(None, study.direction.name.lower(), budget)
    base_sampler = study.sampler

    def snapshot() -> StudyProgress:
        if progress.mode == "quiet":  # spare the database the reads nobody sees
            return StudyProgress(0, n_trials, 0, None, None, None)
        return study_progress(study, n_trials)

    while True:
        if stop():
            summary.stop_reason = "stopped by a signal" if stop.signal_number else "stopped"
            break
        if deadline is not None and time.monotonic() >= deadline:
            summary.stop_reason = f"the {timeout:g} s time limit passed"
            break
        trial = None
        with storage_lock(storage, lock_name):
            if beating:
                _fail_stale_trials(study, storage, study_id, retry)
            trials = study.get_trials(deepcopy=False)
            if _queue_missing_retries(study, trials, retry):
                trials = study.get_trials(deepcopy=False)
            queued = any(t.state == TrialState.WAITING for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            retried = retried_numbers(trials)
            used = sum(counts_towards_budget(t, retried) for t in trials)
            decision = plan.decide(trials) if plan is not None and not stop() else None
            if decision is not None and decision.stop:
                summary.stop_reason = decision.stop
            elif not stop() and (queued or n_trials is None or used < n_trials):
                if decision is not None:
                    for params, attrs in decision.promotions:
                        study.enqueue_trial(params, user_attrs=attrs)
                    study.sampler = _fixing(base_sampler, decision.fixed)
                trial = _ask(study)
                if plan is not None:
                    trial = _skip_unaffordable(study, plan, trial, n_trials)
            if trial is not None:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                if beating:
                    storage.record_heartbeat(trial_id)  # stale-able even if we die right now
                storage.set_trial_system_attr(trial_id, WORKER_ATTR, worker_name())
                if decision is not None and decision.stage:
                    _record_stage(storage, trial_id, decision.stage)
        if summary.stop_reason:
            break
        if trial is None:
            if stop():
                continue
            if running == 0:
                summary.stop_reason = f"the study has its {n_trials} trials"
                break
            if running != waiting_for:
                progress.waiting(running)
                waiting_for = running
            wait = WAIT_POLL_SECONDS
            if beating:
                wait = max(wait, float(heartbeat_interval(storage) or 0))
            stop.event.wait(wait)
            continue
        waiting_for = -1

        frozen = storage.get_trial(trial_id)
        retry_of = retried_from(frozen)
        progress.trial_started(trial.number, frozen.params, snapshot(), retry_of)
        watchdog = (_deadline_watchdog(study, storage, trial_id, trial.number, budget)
                    if budget is not None and leave_at_deadline else None)
        try:
            outcome = _run_one(storage, trial_id, trial, objective, stop)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        note = ""
        if outcome.state is None:  # taken over: another worker failed it as stale and retried it
            note = "taken over by another worker after a missed heartbeat"
            final = storage.get_trial(trial_id)
        elif outcome.interrupted:
            try:
                final = _hand_back(study, storage, trial_id, retry, lock_name, stop)
            except StorageError as error:
                raise _hand_back_abandoned(error, trial.number, stop, storage) from None
            note = "handed back for a retry" if final.number in _retried(study) else "not retried: retry limit reached"
        else:
            try:
                study.tell(trial, outcome.value, state=outcome.state)
            except UpdateFinishedTrialError:
                note = "taken over by another worker after a missed heartbeat"
            final = storage.get_trial(trial_id)
        summary.trials.append(final)
        progress.trial_finished(final, snapshot(), note)
        if on_trial is not None:
            on_trial(final)
        if outcome.interrupted:
            summary.stop_reason = "stopped by a signal; the running trial was handed back"
            break
        if outcome.fatal is not None and not note:
            raise outcome.fatal  # every trial would fail the same way: stop with its one line
        consecutive_failures = consecutive_failures + 1 if final.state == TrialState.FAIL and not note else 0
        if consecutive_failures >= max_consecutive_failures:
            reason = fail_reason_of(final) or "see the worker log"
            raise WorkerError(
                f"{consecutive_failures} trials in a row failed (last, trial {final.number}: {reason}); "
                "fix the cause and start the worker again (`medsweep status` lists each reason)"
            )
    summary.exit_code = stop.exit_code
    return summary


def _fixing(base: optuna.samplers.BaseSampler, fixed: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """The study's sampler with the stage's parameters fixed (TPE still samples the rest)."""
    if not fixed:
        return base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(fixed, base)


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for Study.optimize; this loop beats for its
        # trials itself, as Study.optimize does.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def _skip_unaffordable(study: optuna.Study, plan: Any, trial: optuna.Trial,
                       n_trials: int | None) -> optuna.Trial | None:
    """`ask` takes queued trials first: a queued promotion that can no longer finish in the budget
    left is told pruned at once, never started, with the reason in `stopped_by`, and the next
    trial asked for, so a cheaper trial runs instead and none is left waiting at the end. None
    when the study's trial count leaves no room for another (a dropped promotion counts)."""
    while True:
        trials = study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        reason = plan.cannot_finish(frozen, trials)
        if reason is None:
            return trial
        trial.set_user_attr(STOPPED_BY, reason)
        study.tell(trial, state=TrialState.PRUNED)
        trials = study.get_trials(deepcopy=False)  # counted afresh: the dropped trials count too
        queued = any(t.state == TrialState.WAITING for t in trials)
        retried = retried_numbers(trials)
        if not queued and n_trials is not None and sum(counts_towards_budget(t, retried) for t in trials) >= n_trials:
            return None
        trial = _ask(study)


def _record_stage(storage: Any, trial_id: int, planned: str) -> None:
    """Name the trial's stage: a promotion carries it, a retry's depth implies it, else the plan's."""
    frozen = storage.get_trial(trial_id)
    if STAGE in frozen.user_attrs:
        return
    fixed = frozen.system_attrs.get(FIXED_PARAMS) or {}
    stage = stage_of_fraction(fixed.get("fine_tune_fraction")) or planned
    storage.set_trial_user_attr(trial_id, STAGE, stage)


def _deadline_watchdog(study: optuna.Study, storage: Any, trial_id: int, number: int,
                       budget: Any) -> threading.Timer:
    """A timer that, should the trial still run DEADLINE_GRACE_SECONDS past the study's deadline,
    records it pruned (stopped by the budget) and ends this worker process, so the budget holds
    even when no batch end comes. Ending the process from this thread is the point: the main
    thread is inside a call (a model build, a first step's tracing, a long C operation) that no
    Python-level signal or exception reaches until it returns."""

    def expire() -> None:
        try:
            storage.set_trial_user_attr(trial_id, STOPPED_BY,
                                        "the study's wall budget was spent (stopped between batches)")
            if not _tell(study, storage, trial_id, TrialState.PRUNED):
                return  # it finished meanwhile; the loop will see the budget spent and stop
        except UpdateFinishedTrialError:
            return
        except Exception:  # the database is away: leave anyway, the heartbeat check fails the trial later
            _logger.warning("could not record trial %s as stopped by the budget", number, exc_info=True)
        print(f"trial {number} ran {DEADLINE_GRACE_SECONDS:g} s past the study's wall budget: recorded "
              "pruned; this worker stops", flush=True)
        os._exit(0)

    delay = max(0.0, budget.deadline + DEADLINE_GRACE_SECONDS - time.time())
    timer = threading.Timer(delay, expire)
    timer.daemon = True
    timer.start()
    return timer


def _retried(study: optuna.Study) -> set[int]:
    return retried_numbers(study.get_trials(deepcopy=False))


@dataclass
class _Outcome:
    state: TrialState | None
    value: float | None = None
    interrupted: bool = False
    fatal: BaseException | None = None


def _run_one(storage: Any, trial_id: int, trial: optuna.Trial, objective: Any, stop: StopRequest) -> _Outcome:
    """Train one trial with its heartbeat running; classify how it ended. (No gc here:
    `train_trial` clears the Keras session and collects garbage itself.)"""
    with heartbeat(storage, trial_id):
        try:
            return _Outcome(TrialState.COMPLETE, float(objective(trial)))
        except BudgetSpent:
            trial.set_user_attr(STOPPED_BY, BUDGET_STOP_REASON)
            return _Outcome(TrialState.PRUNED)
        except optuna.TrialPruned:
            return _Outcome(TrialState.PRUNED)
        except StorageError as error:
            if stop():  # told to stop during an outage: the trial cannot be handed back
                raise _hand_back_abandoned(error, trial.number, stop, storage) from None
            raise  # the database is gone for longer than the limit: stop this worker
        except UpdateFinishedTrialError:
            return _Outcome(None)
        except Exception as error:
            if stop() or isinstance(error, TrialInterrupted):
                return _Outcome(TrialState.FAIL, interrupted=True)
            if storage.get_trial(trial_id).state.is_finished():
                return _Outcome(None)  # failed as stale by another worker meanwhile
            if getattr(error, "fatal", False):
                if not fail_reason_of(storage.get_trial(trial_id)):
                    storage.set_trial_user_attr(trial_id, FAIL_REASON, describe_exception(error))
                return _Outcome(TrialState.FAIL, fatal=error)
            _logger.debug("trial %s failed", trial.number, exc_info=True)
            return _Outcome(TrialState.FAIL)


def _hand_back_abandoned(error: StorageError, number: int, stop: StopRequest, storage: Any) -> WorkerError:
    """The worker's last line when it was told to stop while the database was away."""
    name = signal.Signals(stop.signal_number).name if stop.signal_number else "a stop request"
    retried = (f"once the database is back, the next worker finds it without a heartbeat for "
               f"{heartbeat_grace(storage):g} s and retries it") if heartbeat_interval(storage) is not None \
        else "fail it by hand once the database is back (this storage keeps no heartbeats)"
    return WorkerError(f"{error}; the hand-back of trial {number} after {name} was abandoned: it stays running in "
                       f"the study, and {retried}")


def _hand_back(study: optuna.Study, storage: Any, trial_id: int, retry: RetryTrial, lock_name: str,
               stop: StopRequest) -> FrozenTrial:
    """Fail the interrupted trial and queue its retry under the budget lock, so no other worker
    sees the budget one short in between. The trial is marked for a retry first: if the
    hard-stop timer (or SIGKILL) ends this process half-way, the next worker finds the trial
    running without a heartbeat, or failed and marked without a retry, and queues the retry."""
    name = signal.Signals(stop.signal_number).name if stop.signal_number else "a stop request"
    with storage_lock(storage, lock_name):
        try:
            _mark_for_retry(storage, trial_id, f"interrupted by {name}; handed back for a retry")
            if not _tell(study, storage, trial_id, TrialState.FAIL):
                return storage.get_trial(trial_id)
        except UpdateFinishedTrialError:
            return storage.get_trial(trial_id)
        final = storage.get_trial(trial_id)
        retry(study, final)
    return final
