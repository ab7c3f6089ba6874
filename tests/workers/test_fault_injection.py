"""Fault injection against real PostgreSQL: a worker (`light_worker.py`, the real worker loop on a
2-step objective) gets SIGTERM or SIGKILL at seeded moments of its life: start-up, right after
a trial is created, mid-epoch, inside the budget lock, at each step of the SIGTERM hand-back
(with the hard-stop timer firing inside it), and around the final write. A second worker then
finishes the study. Every run must end with no running or queued trial, every trial that was
interrupted retried, and exactly the budget of finished trials."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from medsweep.search.study._study import make_sampler
from medsweep.search._record import RETRY_MARK
from medsweep.search.workers._budget import retried_numbers
from medsweep.search.workers._loop import run_trials
from medsweep.search.workers._supervisor import WorkerOptions, open_worker_storage

from .conftest import LIGHT_WORKER, REPO
from .light_worker import light_objective

pytestmark = [pytest.mark.postgres]

BUDGET = 3
GRACE = 2  # seconds without a heartbeat before a trial counts as abandoned (beats every second)
RUNS = 30
# Where the signal lands. The hand-back moments are reached by a SIGTERM mid-epoch; the worker
# is then held there past its hard-stop timer (or killed there with SIGKILL).
PLAIN = ["startup", "ask", "epoch", "lock", "complete-before", "complete-after"]
HAND_BACK = ["mark", "fail-before", "fail-after", "retry"]
MOMENTS = PLAIN + HAND_BACK
HARD_STOP = 4.0  # the light worker's hard-stop timer in hand-back runs (8.5 s in production)


@dataclass
class Run:
    seed: int
    moment: str
    signal: str
    exit_code: int
    exit_seconds: float  # from the first signal to the worker's exit
    trials: list
    reached: bool  # the worker was held at the moment when it ended


def _start(url: str, study: str, args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LIGHT_WORKER), study, str(BUDGET), "0.05", "--grace", str(GRACE),
                             *args], cwd=REPO, env=dict(os.environ, MEDSWEEP_STORAGE=url),
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _wait_for_pause(process: subprocess.Popen, log: Path, point: str, timeout: float = 90,
                    allow_exit: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while f"PAUSE {point}" not in log.read_text():
        if allow_exit and process.poll() is not None:
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the worker never reached {point} (exit {process.poll()}):\n{log.read_text()}")
        time.sleep(0.02)


def _finish(url: str, study: str) -> list:
    """A second worker finishes the study: it retries what the first one left behind."""
    storage = open_worker_storage(url, WorkerOptions(heartbeat_interval=1, grace_period=GRACE, db_down_limit=60))
    loaded = optuna.load_study(study_name=study, storage=storage, sampler=make_sampler())
    run_trials(storage, loaded, light_objective(0.01), n_trials=BUDGET, timeout=60)
    trials = loaded.get_trials(deepcopy=False)
    storage.engine.dispose()
    return trials


def inject(url: str, seed: int, kill: bool, tmp_path: Path) -> Run:
    rng = random.Random(seed)
    moment = MOMENTS[seed % len(MOMENTS)]
    study = f"fault-{'kill' if kill else 'term'}-{seed}"
    optuna.create_study(storage=url, study_name=study, sampler=make_sampler())
    log = tmp_path / f"{study}.log"
    nth = rng.randint(1, 2)  # the first or the second trial
    if moment in HAND_BACK:
        # With SIGTERM the hard-stop timer ends the worker inside the hand-back; with SIGKILL
        # the kill does, and the timer keeps its production length.
        # (the first epoch of the trial: after its last one, the trial completes instead)
        args = ["--pause", f"epoch:{2 * nth - 1}:0.2", "--pause", f"{moment}:1:8"] + ([] if kill else
                                                                               ["--hard-stop", str(HARD_STOP)])
    elif moment == "startup":
        args = []
    else:
        args = ["--pause", f"{moment}:{nth}:1.5"]
    worker = _start(url, study, args, log)
    try:
        if moment == "startup":
            time.sleep(rng.uniform(0.0, 4.0))  # imports, storage, study load or the first trial
        else:
            _wait_for_pause(worker, log, "epoch" if moment in HAND_BACK else moment)
            time.sleep(rng.uniform(0.0, 0.15))
        alive = worker.poll() is None  # at start-up it may already have finished its budget
        sent = time.monotonic()
        if moment in HAND_BACK:
            worker.send_signal(signal.SIGTERM)  # the hand-back starts
            if kill:
                _wait_for_pause(worker, log, moment, allow_exit=True)
                if worker.poll() is None:
                    worker.send_signal(signal.SIGKILL)
            # else: the hard-stop timer ends the worker while it is held inside the hand-back
        else:
            worker.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        code = worker.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if worker.poll() is None:
            worker.kill()
    # Under load the timer may fire before the worker reaches the point: still a valid run.
    reached = alive and (moment not in HAND_BACK or f"PAUSE {moment}" in log.read_text())
    return Run(seed, moment, "SIGKILL" if kill else "SIGTERM", code, took, _finish(url, study), reached)


def check(run: Run) -> None:
    where = f"seed {run.seed} ({run.signal} at {run.moment}): " + repr(
        [(t.number, t.state.name, t.user_attrs.get("fail_reason"), t.system_attrs.get("failed_trial"))
         for t in run.trials])
    assert not [t for t in run.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], where
    retried = retried_numbers(run.trials)
    # No lost trial: every trial that was interrupted (handed back or abandoned) was retried.
    lost = [t.number for t in run.trials if t.state == TrialState.FAIL and t.number not in retried]
    assert not lost, where
    assert all(t.system_attrs.get(RETRY_MARK) for t in run.trials if t.state == TrialState.FAIL), where
    # The exact budget: finished trials that count, and nothing more.
    assert sum(t.state == TrialState.COMPLETE for t in run.trials) == BUDGET, where
    assert len(run.trials) == BUDGET + len(retried), where
    if run.signal == "SIGTERM":
        # (0: it had finished; -SIGTERM: it was still importing, before its handler was set, or,
        # on a loaded machine, it had finished its last trial and was leaving, its handler gone:
        # then no trial was in flight, so none was interrupted and retried)
        assert run.exit_code in (0, 128 + signal.SIGTERM) or (run.exit_code == -signal.SIGTERM and (
            run.moment == "startup" or not retried)), where
        assert run.exit_seconds < 10, where
    else:
        assert run.exit_code == -signal.SIGKILL or not run.reached, where


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_at_any_moment_loses_no_trial_and_keeps_the_exact_budget(postgres_url: str, tmp_path: Path,
                                                                          kill: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.storages.RDBStorage(postgres_url).engine.dispose()  # the schema, before the runs race to make it
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:  # three runs at a time: most of a run is waiting
        runs = list(pool.map(lambda seed: inject(postgres_url, seed, kill, tmp_path), range(RUNS)))
    for run in runs:
        check(run)
    assert {run.moment for run in runs} == set(MOMENTS)
    held = [run for run in runs if run.moment in HAND_BACK]
    assert sum(run.reached for run in held) * 2 >= len(held), [(r.seed, r.moment) for r in held if not r.reached]
    exits = sorted(run.exit_seconds for run in runs)
    print(f"{len(runs)} {'SIGKILL' if kill else 'SIGTERM'} runs in {time.monotonic() - started:.0f} s; "
          f"exit after the signal: median {exits[len(exits) // 2]:.2f} s, max {exits[-1]:.2f} s; "
          f"{sum(run.reached for run in held)}/{len(held)} hand-back runs ended inside the hand-back")


@pytest.mark.slow
def test_a_hand_back_stuck_behind_a_locked_table_exits_in_time_and_loses_nothing(postgres_url: str,
                                                                              tmp_path: Path) -> None:
    """Issue 11's reproduction: another session holds `trial_system_attributes` locked while the
    worker is told to stop, so the hand-back cannot finish before the hard-stop timer."""
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=postgres_url, study_name="locked", sampler=make_sampler())
    log = tmp_path / "locked.log"
    worker = _start(postgres_url, "locked", ["--pause", "epoch:1:0.5"], log)
    locker = sqlalchemy.create_engine(postgres_url)
    try:
        _wait_for_pause(worker, log, "epoch")
        with locker.connect() as connection:
            connection.execute(sqlalchemy.text("LOCK TABLE trial_system_attributes IN EXCLUSIVE MODE"))
            sent = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
            took = time.monotonic() - sent
            connection.rollback()  # releases the table
    finally:
        if worker.poll() is None:
            worker.kill()
        locker.dispose()
    run = Run(0, "hand-back behind a locked table", "SIGTERM", code, took, _finish(postgres_url, "locked"), True)
    check(run)
    assert code == 128 + signal.SIGTERM and took > 8, run  # the hard-stop timer ended it
