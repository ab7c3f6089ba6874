"""A worker process that runs medsweep's real worker loop (`run_trials`: budget lock, ask and
tell, heartbeats, retries, SIGTERM hand-back, the database-restart tolerant storage from
`open_worker_storage`) on a trivial objective instead of Keras training, so tests of the loop's
mechanics can run many processes at once on two cores.

    python tests/workers/light_worker.py STUDY N_TRIALS [SECONDS_PER_STEP [BUDGET_SECONDS [STEPS]]]
        [--grace S] [--hard-stop S] [--pause POINT:NTH:SECONDS ...]
    (N_TRIALS 0: no trial count, only the wall budget)
    (storage URL in $MEDSWEEP_STORAGE; prints one JSON line, or the error and exits 1)

`--pause` holds the worker for SECONDS at the NTH time it reaches POINT, after printing
`PAUSE POINT` on stderr, so a fault test can send a signal at that very moment:
  lock        inside the budget lock            ask          after a trial is created, before its first beat
  epoch       after an intermediate value       mark         before a trial is marked for its retry
  fail-before / fail-after   around failing a handed-back trial
  retry       before the retry is queued        complete-before / complete-after   around the final write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def light_objective(step_seconds: float, stop: Callable[[], bool] | None = None, steps: int = 2,
                    budget: Any = None) -> Callable[[Any], float]:
    """`steps` "epochs" of `step_seconds`, each reporting an intermediate value; stops like the
    worker's Keras callbacks do when told to or when the wall budget is spent."""
    from medsweep.search.workers._budget import BudgetSpent
    from medsweep.search.workers._loop import TrialInterrupted

    def objective(trial: Any) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(steps):  # like epochs: intermediate values written while the heartbeat runs
            time.sleep(step_seconds)
            if stop is not None and stop():
                raise TrialInterrupted("the worker was told to stop")
            if budget is not None and time.time() >= budget.deadline:
                raise BudgetSpent("budget spent")  # what the Keras deadline callback does at a batch end
            trial.report((x - 0.3) ** 2 + 0.1 / (step + 1), step)
        return (x - 0.3) ** 2

    return objective


class Pauses:
    """Hold the process at chosen points of the worker's storage calls (see the module doc)."""

    def __init__(self, specs: list[str]) -> None:
        self.plan: dict[str, tuple[int, float]] = {}
        for spec in specs:
            point, nth, seconds = spec.split(":")
            self.plan[point] = (int(nth), float(seconds))
        self.seen: dict[str, int] = {}

    def at(self, point: str) -> None:
        if point not in self.plan:
            return
        self.seen[point] = self.seen.get(point, 0) + 1
        nth, seconds = self.plan[point]
        if self.seen[point] == nth:
            print(f"PAUSE {point}", file=sys.stderr, flush=True)
            time.sleep(seconds)

    def install(self, storage: Any) -> None:
        """Wrap this storage object's methods (real database calls, with a pause around them)."""
        from optuna.trial import TrialState

        from medsweep.search._record import RETRY_MARK

        lock, beat = storage.lock, storage.record_heartbeat
        state_values, system_attr = storage.set_trial_state_values, storage.set_trial_system_attr
        intermediate, add_trial = storage.set_trial_intermediate_value, storage._create_new_trial

        @contextmanager
        def paused_lock(name: str) -> Iterator[None]:
            with lock(name):
                self.at("lock")
                yield

        def paused_beat(trial_id: int) -> None:
            if threading.current_thread() is threading.main_thread():  # the first beat, right after ask
                self.at("ask")
            beat(trial_id)

        def paused_state(trial_id: int, state: Any, values: Any = None) -> bool:
            phase = {TrialState.FAIL: "fail", TrialState.COMPLETE: "complete"}.get(state)
            if phase:
                self.at(f"{phase}-before")
            done = state_values(trial_id, state, values)
            if phase:
                self.at(f"{phase}-after")
            return done

        def paused_system_attr(trial_id: int, key: str, value: Any) -> None:
            if key == RETRY_MARK:
                self.at("mark")
            system_attr(trial_id, key, value)

        def paused_intermediate(trial_id: int, step: int, intermediate_value: float) -> None:
            intermediate(trial_id, step, intermediate_value)
            self.at("epoch")

        def paused_add(study_id: int, template_trial: Any = None) -> Any:  # what Optuna's cache calls
            if template_trial is not None:  # a queued retry
                self.at("retry")
            return add_trial(study_id, template_trial)

        storage.lock, storage.record_heartbeat = paused_lock, paused_beat
        storage.set_trial_state_values, storage.set_trial_system_attr = paused_state, paused_system_attr
        storage.set_trial_intermediate_value, storage._create_new_trial = paused_intermediate, paused_add


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("step_seconds", type=float, nargs="?", default=0.02)
    parser.add_argument("budget_seconds", type=float, nargs="?", default=None)
    parser.add_argument("steps", type=int, nargs="?", default=2)
    parser.add_argument("--grace", type=int, default=10)
    parser.add_argument("--hard-stop", type=float)
    parser.add_argument("--pause", action="append", default=[])
    args = parser.parse_args()
    import optuna

    from medsweep.search import USER_ERRORS
    from medsweep.search.study._study import make_sampler
    from medsweep.search.workers import _loop
    from medsweep.search.workers._supervisor import WorkerOptions, open_worker_storage
    from medsweep.search.workers._budget import wall_budget
    from medsweep.storage import storage_lock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.hard_stop is not None:
        _loop.HARD_STOP_SECONDS = args.hard_stop
    stop = _loop.StopRequest()
    stop.install()
    try:
        storage = open_worker_storage(os.environ["MEDSWEEP_STORAGE"],
                                      WorkerOptions(heartbeat_interval=1, grace_period=args.grace, db_down_limit=60))
        Pauses(args.pause).install(storage)
        study = optuna.load_study(study_name=args.study, storage=storage, sampler=make_sampler())
        budget = None
        if args.budget_seconds is not None:
            budget = wall_budget(storage, study, args.budget_seconds,
                                 lambda: storage_lock(storage, f"budget:{args.study}"))
        summary = _loop.run_trials(storage, study, light_objective(args.step_seconds, stop, args.steps, budget),
                                   n_trials=args.n_trials or None, stop=stop, budget=budget)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"pid": os.getpid(), "ran": len(summary.trials), "reason": summary.stop_reason}), flush=True)
    if summary.exit_code:
        _loop.leave_now(summary.exit_code)  # as `medsweep worker` does after a signal
    return 0


if __name__ == "__main__":
    sys.exit(main())
