"""The staged plan of a budgeted search: which stage each new trial belongs to, which configs are
promoted, when no trial fits in the time left; a pure function of the stored trials and the clock."""

from __future__ import annotations

import datetime

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from medsweep.search import SearchSpace, WorkerError
from medsweep.search.workers._budget import WallBudget, parse_duration
from medsweep.search.workers._plan import (FIRST_COST_RATIO, PARTIAL_FRACTION, PROMOTED_FROM, STAGE, StagePlan,
                                            ranking_candidates, ranking_lines, stage_of)

SPACE = SearchSpace.default({"backbone": ["MobileNet", "MobileNetV2"]})
DISTRIBUTIONS = {"fine_tune_fraction": CategoricalDistribution([0.0, 0.3, 1.0]),
                 "learning_rate": FloatDistribution(1e-6, 1e-2, log=True),
                 "frozen_warmup_epochs": IntDistribution(1, 10),
                 "backbone_lr_factor": CategoricalDistribution([0.1, 1.0])}
T0 = datetime.datetime(2026, 1, 1)


def trial(number: int, value: float | None, fraction: float, seconds: float = 10.0,
          state: TrialState = TrialState.COMPLETE, **attrs: object) -> optuna.trial.FrozenTrial:
    made = create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                        params={"fine_tune_fraction": fraction, "learning_rate": 1e-3 * (number + 1),
                                "frozen_warmup_epochs": 3, "backbone_lr_factor": 0.1},
                        distributions=DISTRIBUTIONS, user_attrs=dict(attrs))
    made.number = number
    made.datetime_start = T0
    made.datetime_complete = T0 + datetime.timedelta(seconds=seconds) if state.is_finished() else None
    return made


def plan(shortlist: tuple = ()) -> StagePlan:
    return StagePlan(SPACE, "maximize", WallBudget(0.0, 100.0), shortlist)


def test_the_budget_is_spent_frozen_then_partial_then_full() -> None:
    done = [trial(0, 0.8, 0.0), trial(1, 0.9, PARTIAL_FRACTION)]
    assert [plan().decide(done, now).stage for now in (0, 9, 11, 39, 41, 90)] == \
        ["frozen", "frozen", "partial", "partial", "full", "full"]
    assert plan().decide(done, 10).fixed == {"fine_tune_fraction": 0.0}
    assert plan().decide(done, 60).fixed == {"fine_tune_fraction": 1.0}


def test_no_stage_is_skipped_before_the_one_below_has_a_result() -> None:
    # A slow start-up (or a tiny budget) must not jump past the cheap stage: nothing to promote.
    assert plan().decide([], 60).stage == "frozen"
    running = trial(0, None, 0.0, state=TrialState.RUNNING)
    assert plan().decide([running], 60).stage == "frozen"
    assert plan().decide([trial(0, 0.8, 0.0)], 60).stage == "partial"


def test_entering_a_stage_promotes_the_best_third_once() -> None:
    frozen = [trial(i, value, 0.0) for i, value in enumerate([0.7, 0.9, 0.6, 0.8, 0.5, 0.65])]
    decision = plan().decide(frozen, 20)
    assert decision.stage == "partial"
    assert [attrs[PROMOTED_FROM] for _, attrs in decision.promotions] == [1, 3]
    params, attrs = decision.promotions[0]
    assert params["fine_tune_fraction"] == PARTIAL_FRACTION and attrs[STAGE] == "partial"
    # meaningless in a frozen trial: TPE chooses them for the fine-tune
    assert "frozen_warmup_epochs" not in params and "backbone_lr_factor" not in params
    assert params["learning_rate"] == frozen[1].params["learning_rate"]
    # Trial 1 was queued by another worker: only trial 3 is left to promote, by anyone.
    queued = trial(6, None, PARTIAL_FRACTION, state=TrialState.WAITING, **{PROMOTED_FROM: 1, STAGE: "partial"})
    assert [a[PROMOTED_FROM] for _, a in plan().decide([*frozen, queued], 20).promotions] == [3]
    # A fresh plan (a restarted worker) decides the same from the same trials.
    assert plan().decide([*frozen, queued], 20).promotions == StagePlan(
        SPACE, "maximize", WallBudget(0.0, 100.0)).decide([*frozen, queued], 20).promotions


def test_full_stage_promotes_from_partial_and_keeps_the_warmup() -> None:
    trials = [trial(0, 0.8, 0.0), trial(1, 0.9, PARTIAL_FRACTION), trial(2, 0.7, PARTIAL_FRACTION)]
    decision = plan().decide(trials, 60)
    assert decision.stage == "full"
    assert [(p["fine_tune_fraction"], p["frozen_warmup_epochs"], p["backbone_lr_factor"], a[PROMOTED_FROM])
            for p, a in decision.promotions] == [(1.0, 3, 0.1, 1)]


def test_a_trial_that_cannot_finish_in_time_is_not_started() -> None:
    trials = [trial(0, 0.8, 0.0, seconds=10), trial(1, 0.9, PARTIAL_FRACTION, seconds=50)]
    late = plan().decide(trials, 85)  # 15 s left: neither full nor partial (50 s) fits, a frozen one does
    assert late.stage == "frozen" and late.promotions == [] and late.expected_seconds == 10
    assert "budget left" in plan().decide(trials, 95).stop  # 5 s left: nothing fits
    assert "spent" in plan().decide(trials, 100).stop


def test_without_a_budget_or_a_searched_depth_nothing_is_staged() -> None:
    assert not StagePlan(SPACE, "maximize", None).staged
    fixed_depth = SearchSpace.default({"fine_tune_fraction": 0.0})
    unstaged = StagePlan(fixed_depth, "maximize", WallBudget(0.0, 100.0))
    assert not unstaged.staged and unstaged.decide([], 60).fixed == {}
    # Still no trial starts that cannot finish: the median trial took 50 s, 20 s are left.
    assert "budget left" in unstaged.decide([trial(0, 0.5, 0.0, seconds=50)], 80).stop


def test_the_shortlist_is_searched_round_robin() -> None:
    shortlist = ({"backbone": "MobileNet", "weights": "imagenet", "image_size": None},
                 {"backbone": "MobileNetV2", "weights": "imagenet", "image_size": None})
    staged = plan(shortlist)
    assert staged.decide([], 5).fixed["backbone"] == "MobileNet"
    assert staged.decide([trial(0, 0.5, 0.0)], 5).fixed["backbone"] == "MobileNetV2"


def test_stage_of_reads_the_record_or_the_depth() -> None:
    assert stage_of(trial(0, 0.5, 1.0)) == "full"
    assert stage_of(trial(0, 0.5, 0.0, **{STAGE: "partial"})) == "partial"


def test_candidates_and_the_ranking_table() -> None:
    assert len(ranking_candidates(SPACE)) == 2
    assert ranking_candidates(SearchSpace.default({"backbone": "MobileNet"})) == []
    lines = ranking_lines({"by": "logme", "rows": [
        {"name": "MobileNet/imagenet/224", "backbone": "MobileNet", "weights": "imagenet", "image_size": 224,
         "logme": 0.41, "linear_probe": 0.93, "feature_rms": 0.5},
        {"name": "MobileNet/none/224", "backbone": "MobileNet", "weights": "none", "image_size": 224,
         "logme": None, "linear_probe": None, "feature_rms": 1e-17}],
        "shortlist": [{"backbone": "MobileNet", "weights": "imagenet", "image_size": 224}]})
    assert "LogME" in lines[1] and lines[2].split()[-1] == "yes" and lines[3].split()[-1] == "no"


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("2h", 7200), ("1800s", 1800), ("1h30m", 5400),
                                           ("45", 45)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30 minutes", "0m", "-5m"])
def test_a_bad_duration_names_the_value(text: str) -> None:
    with pytest.raises(WorkerError, match="budget"):
        parse_duration(text)


def test_the_cache_filling_first_trial_does_not_set_the_expected_cost() -> None:
    frozen = [trial(0, 0.8, 0.0, seconds=60), trial(1, 0.7, 0.0, seconds=5), trial(2, 0.6, 0.0, seconds=7)]
    assert plan().expected_seconds("frozen", frozen[:1]) == 60
    assert plan().expected_seconds("frozen", frozen) == 6


def test_a_queued_promotion_that_cannot_finish_is_dropped_and_a_retry_is_not() -> None:
    done = [trial(0, 0.8, 0.0, seconds=10), trial(1, 0.9, PARTIAL_FRACTION, seconds=50)]
    promoted = trial(2, None, 1.0, state=TrialState.RUNNING, **{PROMOTED_FROM: 1, STAGE: "full"})  # just asked
    retry = trial(3, None, 1.0, state=TrialState.RUNNING)  # an interrupted trial's retry: no promoted_from
    trials = [*done, promoted, retry]
    assert plan().cannot_finish(promoted, trials, 20) is None  # 80 s left: a full trial (at least the partial 50 s) fits
    assert plan().cannot_finish(promoted, trials, 60) == "not started: 40 s of the budget left, under the 50 s a full trial takes"
    assert plan().cannot_finish(promoted, trials, 100) == "not started: the study's wall budget was spent"
    assert plan().cannot_finish(retry, trials, 100) is None
    assert StagePlan(SPACE, "maximize", None).cannot_finish(promoted, trials, 100) is None  # no budget, nothing staged


def _trained(number: int, fraction: float, epochs: int, seconds: float, folds: int = 1,
             state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs: dict[str, object] = {"history": {"val_auc": [0.8] * epochs}, "config": {"epochs": epochs}}
    if folds > 1:
        attrs["cv"] = {"mean": 0.8, "folds": [0.8] * folds}
    return trial(number, 0.8, fraction, seconds=seconds, state=state, **attrs)


def test_a_stage_costs_its_seconds_per_epoch_and_fold_pruned_trials_included() -> None:
    trials = [_trained(0, 0.0, 10, 5, folds=5), _trained(1, 0.0, 10, 5, folds=5),
              _trained(2, PARTIAL_FRACTION, 20, 200, folds=5),  # the first of its stage: fills the cut cache
              _trained(3, PARTIAL_FRACTION, 10, 50, folds=5),
              _trained(4, PARTIAL_FRACTION, 10, 40, folds=2, state=TrialState.PRUNED)]  # pruned after fold 2
    assert plan().unit_seconds("partial", trials) == pytest.approx(1.5)  # median of 50/50 and 40/20
    assert plan().trial_seconds("partial", 30, trials) == pytest.approx(1.5 * 30 * 5)
    # no full trial yet: the partial stage's unit times the measured ratio
    assert plan().unit_seconds("full", trials) == pytest.approx(1.5 * FIRST_COST_RATIO["full"])


def test_a_long_promotion_is_judged_by_its_own_epochs() -> None:
    trials = [_trained(0, 0.0, 10, 5), _trained(1, PARTIAL_FRACTION, 10, 20), _trained(2, PARTIAL_FRACTION, 40, 80),
              _trained(3, 1.0, 10, 40), _trained(4, 1.0, 10, 40)]  # a full trial: 4 s per epoch
    trials[1].params["epochs"], trials[2].params["epochs"] = 10, 40
    short = trial(5, None, 1.0, state=TrialState.RUNNING, **{PROMOTED_FROM: 1, STAGE: "full"})
    short.params["epochs"] = 10
    # just asked, a promotion has suggested nothing yet: its epochs are its source's (trial 2's 40)
    long = trial(6, None, 1.0, state=TrialState.RUNNING, **{PROMOTED_FROM: 2, STAGE: "full"})
    assert plan().cannot_finish(short, trials, 50) is None  # 50 s left, 40 s needed
    assert plan().cannot_finish(long, trials, 50) == \
        "not started: 50 s of the budget left, under the 160 s a full trial takes"
