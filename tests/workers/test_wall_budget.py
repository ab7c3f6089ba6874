"""`--budget`: the whole study's wall budget across workers is kept. The first worker records the
deadline, every worker stops starting trials that would not finish, a trial still running at the
deadline stops at its next batch end and is recorded pruned, and no trial is left running."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from medsweep.search import make_sampler
from medsweep.search._record import STOPPED_BY
from medsweep.search.workers._budget import DEADLINE_ATTR

from ..conftest import TINY_SPACE
from medsweep.search.workers._loop import DEADLINE_GRACE_SECONDS, WORKER_ATTR
from medsweep.search.workers._plan import STAGE

from .conftest import create_study, medsweep, start_light_worker, start_worker, trials

# Some seconds for a process to leave after the deadline: a batch end, the last writes, and on
# these two shared cores the interpreter's exit.
SLACK_SECONDS = 10.0


def deadline_of(storage: str, study: str) -> float:
    loaded = optuna.load_study(study_name=study, storage=storage)
    return float(loaded._storage.get_study_system_attrs(loaded._study_id)[DEADLINE_ATTR])


# How long one database write (an `ask`, a `tell`) may take on a loaded machine: a trial's
# start or completion is stamped that long after the worker checked the deadline.
WRITE_SECONDS = 2.0


@pytest.mark.parametrize("budget, steps", [(5, 5), (3, 10)], ids=["trials-fit", "trials-cut"])
def test_light_workers_keep_the_wall_budget(storage_url: str, budget: float, steps: int) -> None:
    """trials-fit: 2 s trials, a 5 s budget: two rounds fit, and the at most 1 s left is too short
    for a third, so no worker starts one. trials-cut: 4 s trials in a 3 s budget (nothing measured
    yet when they start): each is stopped at the deadline and recorded pruned.

    What is asserted holds however slow the machine: a trial sleeps at least `steps` x 0.4 s, so
    every duration a worker measures is at least that long, and a worker decides on its next
    trial only after its last one finished. On an idle machine no trials-fit trial is stopped;
    under load a trial may run longer than the ones measured before it and be cut at the
    deadline, which is the budget working, not failing."""
    step_seconds = 0.4
    shortest = steps * step_seconds  # no trial that completes takes less
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=storage_url, study_name="wall", sampler=make_sampler())
    started = time.time()
    processes = [start_light_worker(storage_url, "wall", 0, step_seconds, budget, steps) for _ in range(2)]
    reports, ended = [], []
    for process in processes:
        out, err = process.communicate(timeout=120)
        ended.append(time.time())
        assert process.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    deadline = deadline_of(storage_url, "wall")
    assert started + budget < deadline  # the first worker started it once up (imports take seconds here)
    assert max(ended) <= deadline + SLACK_SECONDS
    final = trials(storage_url, "wall")
    assert final and not [t.number for t in final if not t.state.is_finished()]
    assert {t.state for t in final} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # No trial started after the deadline, and none was counted complete past it.
    assert all(t.datetime_start.timestamp() <= deadline + WRITE_SECONDS for t in final)
    assert all(t.datetime_complete.timestamp() <= deadline + WRITE_SECONDS
               for t in final if t.state == TrialState.COMPLETE)
    # The budget stops a trial only once the deadline has come, and records it pruned.
    stopped = [t for t in final if "wall budget" in t.user_attrs.get(STOPPED_BY, "")]
    assert all(t.state == TrialState.PRUNED and t.datetime_complete.timestamp() >= deadline for t in stopped)
    # A worker starts another trial only with a whole measured trial's time left: it decided
    # after its previous trial completed, and every measured duration is at least `shortest`.
    by_worker: dict[str, list] = {}
    for trial in sorted(final, key=lambda t: t.datetime_start):
        by_worker.setdefault(trial.system_attrs[WORKER_ATTR], []).append(trial)
    for own in by_worker.values():
        for previous, following in zip(own, own[1:]):
            if previous.state == TrialState.COMPLETE:
                left = deadline - previous.datetime_complete.timestamp()
                assert left >= shortest, (previous.number, following.number, left)
    if steps == 10:  # 4 s trials never fit in 3 s: every one is cut at the deadline
        assert stopped and all(t.state == TrialState.PRUNED for t in final)
    else:
        # Two rounds take at least 4 s of the 5: nobody starts a third.
        assert all(r["ran"] <= 2 for r in reports), reports
        # The first worker's first trial needs 2 s of the 5 and is never cut short of 3 s of
        # database writes on top of its sleeps.
        assert any(t.state == TrialState.COMPLETE for t in final)
    assert all("budget" in r["reason"] for r in reports), reports


def test_a_restarted_worker_keeps_the_first_deadline(storage_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=storage_url, study_name="again", sampler=make_sampler())
    first = start_light_worker(storage_url, "again", 0, 0.2, 3, 1)
    first.communicate(timeout=120)
    deadline = deadline_of(storage_url, "again")
    # A worker started later with a longer budget finds the deadline passed and runs nothing.
    second = start_light_worker(storage_url, "again", 0, 0.2, 300, 1)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ran"] == 0 and "spent" in report["reason"]
    assert deadline_of(storage_url, "again") == deadline


def test_a_bad_budget_is_one_line() -> None:
    done = medsweep("worker", "x", "--budget", "soon", storage="sqlite:////nonexistent/db.sqlite", check=False)
    assert done.returncode == 1 and "budget 'soon' is not a duration" in done.stderr
    assert "Traceback" not in done.stderr


# The tests' tiny space, with every fine-tuning depth so the plan has stages to walk through.
STAGED_SPACE = TINY_SPACE.replace("fine_tune_fraction: 0.0\nfrozen_warmup_epochs: 0",
                                  "fine_tune_fraction: [0.0, 0.3, 1.0]\nfrozen_warmup_epochs: [1]")


@pytest.mark.slow
def test_two_training_workers_keep_a_40_second_budget(storage_url: str, image_folder: Path, tmp_path: Path) -> None:
    study = create_study(storage_url, image_folder, tmp_path, name="staged", space=STAGED_SPACE, pruner="median")
    worker = start_worker(study, "--workers", "2", "--budget", "40s", "--heartbeat-interval", "2", storage=storage_url,
                          log=tmp_path / "worker.log")
    worker.wait(timeout=300)
    ended = time.time()
    log = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, log
    deadline = deadline_of(storage_url, study)
    # A trial that reaches no batch end in time (tracing a step on these loaded cores) is ended
    # DEADLINE_GRACE_SECONDS after the deadline; the supervisor waits for both children.
    assert ended <= deadline + DEADLINE_GRACE_SECONDS + 2 * SLACK_SECONDS, log
    # Every trial has finished, none runs on and none is left queued: promotions the budget could
    # no longer pay for were recorded pruned without starting.
    final = trials(storage_url, study)
    assert final and all(t.state.is_finished() for t in final), log
    never_started = [t for t in final if t.datetime_start is None]
    assert all(t.state == TrialState.PRUNED and t.user_attrs[STOPPED_BY].startswith("not started") for t in never_started)
    assert all(t.datetime_start.timestamp() <= deadline + WRITE_SECONDS for t in final if t not in never_started)
    stages = [t.user_attrs.get(STAGE) for t in sorted(final, key=lambda t: t.number)]
    assert stages[0] == "frozen" and set(stages) <= {"frozen", "partial", "full"}, stages
    assert all(t.state == TrialState.PRUNED for t in final if t.user_attrs.get(STOPPED_BY)), log
    assert "budget" in log


def test_a_budgeted_study_ranks_its_candidates_once(image_folder: Path, tmp_path: Path) -> None:
    """The first worker ranks every (backbone, weights, size) candidate on cached features and
    stores the table; a second worker reuses it; `status` shows it."""
    from medsweep.objectives.images import ImageDataset
    from medsweep.search import SearchSpace, create_study as create, load_study
    from medsweep.search.study._data import make_data_spec
    from medsweep.storage import storage_lock
    from medsweep.search.workers._plan import TRANSFERABILITY, prepare_plan
    from medsweep.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'rank.db'}")
    dataset = ImageDataset.open(make_data_spec(str(image_folder)))
    space = SearchSpace.default({"backbone": ["MobileNet", "MobileNetV2"], "alpha": 0.35, "image_size": 32,
                                 "weights": "none"})
    create(storage, "rank", dataset, space)
    study, settings = load_study(storage, "rank")
    lock = lambda: storage_lock(storage, "budget:rank")  # noqa: E731
    budget, plan = prepare_plan(storage, study, settings, dataset, 600, lock)
    ranking = load_study(storage, "rank")[0].user_attrs[TRANSFERABILITY]
    assert budget is not None and plan.staged
    assert sorted(row["backbone"] for row in ranking["rows"]) == ["MobileNet", "MobileNetV2"]
    again = load_study(storage, "rank")
    assert prepare_plan(storage, again[0], again[1], dataset, None, lock)[0] == budget  # read, not restarted
    assert "transferability" in medsweep("status", "rank", storage=storage.url).stdout
