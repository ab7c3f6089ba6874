"""The study's total budget shared exactly by parallel worker processes, the connection budget
(at most 2 per worker process; 16 workers on a server with max_connections=40) and constant liar.

These use `light_worker.py`: real processes running medsweep's real worker loop and storage
on a trivial objective, because what is tested is the loop, not training (real-training
workers are in test_faults.py)."""

from __future__ import annotations

import json
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from medsweep.search import make_sampler

from .conftest import start_light_worker, start_private_server


def run_light_workers(storage: str, study: str, count: int, n_trials: int, step_seconds: float = 0.02) -> list[dict]:
    processes = [start_light_worker(storage, study, n_trials, step_seconds) for _ in range(count)]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "too many clients" not in err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def new_study(storage: str, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage, study_name=name, sampler=make_sampler())


@pytest.mark.slow
def test_four_workers_asked_for_twenty_finish_exactly_twenty(storage_url: str) -> None:
    study = new_study(storage_url, "budget")
    reports = run_light_workers(storage_url, "budget", count=4, n_trials=20, step_seconds=0.05)
    final = study.get_trials(deepcopy=False)
    assert len(final) == 20 and all(t.state == TrialState.COMPLETE for t in final)
    assert sorted(t.number for t in final) == list(range(20))
    assert sum(r["ran"] for r in reports) == 20
    assert sum(r["ran"] > 0 for r in reports) >= 2  # they really ran side by side
    assert all(r["reason"] == "the study has its 20 trials" for r in reports)


@pytest.mark.slow
@pytest.mark.postgres
def test_sixteen_workers_fit_a_server_with_forty_connections() -> None:
    server = start_private_server(max_connections=40)
    try:
        url = server.new_database()
        database = url.rsplit("/", 1)[1]
        new_study(url, "connections")
        import sqlalchemy

        # Autocommit: within one transaction pg_stat_activity would show the same snapshot.
        monitor = sqlalchemy.create_engine(server.url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")
        per_process: dict[str, int] = {}
        totals: list[int] = []
        done = threading.Event()

        def watch() -> None:
            query = sqlalchemy.text(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = :db AND application_name LIKE 'medsweep pid %' GROUP BY application_name")
            with monitor.connect() as connection:
                while not done.is_set():
                    rows = connection.execute(query, {"db": database}).all()
                    for name, count in rows:
                        per_process[name] = max(per_process.get(name, 0), count)
                    totals.append(sum(count for _, count in rows))
                    time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            reports = run_light_workers(url, "connections", count=16, n_trials=32)
        finally:
            done.set()
            watcher.join()
            monitor.dispose()
        final = optuna.load_study(study_name="connections", storage=url).get_trials(deepcopy=False)
        assert len(final) == 32 and all(t.state == TrialState.COMPLETE for t in final)
        assert sum(r["ran"] for r in reports) == 32
        assert len(per_process) == 16, per_process  # every worker process was seen connected
        assert max(per_process.values()) <= 2, per_process
        assert max(totals) <= 32
    finally:
        server.pg_ctl("stop", "-m", "immediate")


def _pending_spread(constant_liar: bool, seed: int) -> float:
    """Four workers ask for a trial each while none has finished: the mean distance between
    what they got, after 10 finished trials that all point at x = 0.3."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = (make_sampler(seed) if constant_liar else
                   optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5,
                                                 constant_liar=False))
    study = optuna.create_study(sampler=sampler)
    for x in [0.05, 0.15, 0.25, 0.28, 0.3, 0.32, 0.35, 0.5, 0.7, 0.9]:
        study.add_trial(optuna.create_trial(params={"x": x},
                                            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                            value=(x - 0.3) ** 2))
    pending = [study.ask().suggest_float("x", 0, 1) for _ in range(4)]
    distances = [abs(a - b) for i, a in enumerate(pending) for b in pending[i + 1:]]
    return sum(distances) / len(distances)


def test_constant_liar_spreads_parallel_workers_apart() -> None:
    # The study's sampler has constant liar on; without it, four parallel workers that see the
    # same history crowd the same point.
    assert make_sampler()._constant_liar
    with_liar = sum(_pending_spread(True, seed) for seed in range(8)) / 8
    without = sum(_pending_spread(False, seed) for seed in range(8)) / 8
    assert with_liar > 1.5 * without, (with_liar, without)


def test_retry_limit_and_what_counts_towards_the_budget() -> None:
    """A failed trial handed to a retry stops counting (its retry counts instead); after
    `max_retries` retries the last failure stays failed and counts."""
    from medsweep.search.workers._budget import RetryTrial, budget_used, finished_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    retry = RetryTrial(max_retries=1)
    first = study.ask()
    first.suggest_float("x", 0, 1)
    first.set_user_attr("fail_reason", "killed")
    study.tell(first, state=TrialState.FAIL)
    retry(study, study.trials[0])
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert "fail_reason" not in study.trials[1].user_attrs  # the retry starts a clean record
    assert budget_used(study) == 1 and finished_trials(study) == []

    again = study.ask()  # the queued retry, same parameters
    assert again.number == 1 and again.suggest_float("x", 0, 1) == study.trials[0].params["x"]
    study.tell(again, state=TrialState.FAIL)
    retry(study, study.trials[1])  # limit reached: nothing queued
    assert len(study.trials) == 2
    assert budget_used(study) == 1 and [t.number for t in finished_trials(study)] == [1]


def test_status_says_which_trial_retries_a_lost_one() -> None:
    from medsweep.search import status_report
    from medsweep.search.workers._budget import RetryTrial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    lost = study.ask()
    lost.suggest_float("x", 0, 1)
    lost.set_user_attr("fail_reason", "interrupted by SIGTERM; handed back for a retry")
    study.tell(lost, state=TrialState.FAIL)
    RetryTrial(max_retries=2)(study, study.trials[0])
    retry = study.ask()
    study.tell(retry, (retry.suggest_float("x", 0, 1) - 0.3) ** 2)
    first_row = status_report(study, "loss", width=250).splitlines()[2]
    assert first_row.startswith("0 ") and first_row.endswith("interrupted by SIGTERM; handed back for a retry; retried as trial 1")
