"""A worker process that runs medsweep's real worker loop (`run_trials`: budget lock, ask and
tell, heartbeat thread, retries, the database-restart tolerant storage from
`open_worker_storage`) on a trivial objective instead of Keras training, so tests of the loop's
mechanics can run many processes at once on two cores.

    python tests/workers/light_worker.py STUDY N_TRIALS [SECONDS_PER_STEP [BUDGET_SECONDS [STEPS]]]
    (N_TRIALS 0: no trial count, only the wall budget)
    (storage URL in $MEDSWEEP_STORAGE; prints one JSON line, or the error and exits 1)
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    study_name, n_trials = sys.argv[1], int(sys.argv[2])
    step_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.02
    budget_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else None
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    import optuna

    from search import USER_ERRORS
    from search.study._study import make_sampler
    from search.workers._supervisor import WorkerOptions, open_worker_storage
    from search.workers._budget import BudgetSpent, wall_budget
    from search.workers._loop import _lock, run_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    budget = None

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(steps):  # like epochs: intermediate values written while the heartbeat runs
            time.sleep(step_seconds)
            if budget is not None and time.time() >= budget.deadline:
                raise BudgetSpent("budget spent")  # what the Keras deadline callback does at a batch end
            trial.report((x - 0.3) ** 2 + 0.1 / (step + 1), step)
        return (x - 0.3) ** 2

    try:
        storage = open_worker_storage(os.environ["MEDSWEEP_STORAGE"],
                                      WorkerOptions(heartbeat_interval=1, grace_period=10, db_down_limit=60))
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler())
        if budget_seconds is not None:
            budget = wall_budget(storage, study, budget_seconds, lambda: _lock(storage, f"budget:{study_name}"))
        summary = run_trials(storage, study, objective, n_trials=n_trials or None, budget=budget)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"pid": os.getpid(), "ran": len(summary.trials), "reason": summary.stop_reason}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
