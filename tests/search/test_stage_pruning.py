"""The pruner compares like with like: a trial is judged only against trials of its own stage
(frozen head, partial or full fine-tune) at the same step, on a real SQLite study."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from medsweep.search.study._strategy import StageAwarePruner, make_pruner, spare_baselines

DISTRIBUTIONS = {"fine_tune_fraction": CategoricalDistribution([0.0, 0.3, 1.0]),
                 "learning_rate": FloatDistribution(1e-6, 1e-2, log=True)}


def _finished(depth: float, curve: list[float]) -> optuna.trial.FrozenTrial:
    return create_trial(params={"fine_tune_fraction": depth, "learning_rate": 1e-4}, distributions=DISTRIBUTIONS,
                        value=curve[-1], intermediate_values=dict(enumerate(curve)), state=TrialState.COMPLETE)


def _study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="stages", direction="maximize")
    for _ in range(20):  # many frozen heads: good from their first epoch, flat afterwards
        study.add_trial(_finished(0.0, [0.90, 0.91, 0.92, 0.92]))
    # two full fine-tunes: poor while the backbone moves, best at the end
    study.add_trial(_finished(1.0, [0.55, 0.80, 0.93, 0.97]))
    study.add_trial(_finished(1.0, [0.60, 0.84, 0.95, 0.96]))
    return study




def _ask_at(study: optuna.Study, depth: float) -> optuna.Trial:
    study.enqueue_trial({"fine_tune_fraction": depth})
    return study.ask({"fine_tune_fraction": DISTRIBUTIONS["fine_tune_fraction"]})


def test_a_fine_tune_worse_than_the_frozen_median_early_is_not_pruned(tmp_path: Path) -> None:
    study = _study(tmp_path)
    under_test = _ask_at(study, 1.0)
    for step, value in enumerate([0.58, 0.83]):  # below every frozen head, in line with the fine-tunes
        under_test.report(value, step)
    running = study.get_trials(deepcopy=False)[-1]
    assert running.params["fine_tune_fraction"] == 1.0
    median = make_pruner("median")
    assert median.prune(study, running), "the plain median pruner must prune it (else this test proves nothing)"
    assert not StageAwarePruner(median).prune(study, running)
    assert not spare_baselines(median).prune(study, running)  # what workers use


def test_a_fine_tune_below_its_own_stage_is_still_pruned(tmp_path: Path) -> None:
    study = _study(tmp_path)
    bad = _ask_at(study, 1.0)
    for step, value in enumerate([0.50, 0.55]):
        bad.report(value, step)
    assert StageAwarePruner(make_pruner("median")).prune(study, study.get_trials(deepcopy=False)[-1])


def test_a_frozen_head_is_judged_against_frozen_heads(tmp_path: Path) -> None:
    study = _study(tmp_path)
    head = _ask_at(study, 0.0)
    for step, value in enumerate([0.85, 0.86]):  # above both fine-tunes at step 1, below the frozen median
        head.report(value, step)
    frozen = study.get_trials(deepcopy=False)[-1]
    assert StageAwarePruner(make_pruner("median")).prune(study, frozen)


def test_the_first_trials_of_a_new_stage_are_never_pruned(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for _ in range(10):
        study.add_trial(_finished(0.0, [0.9, 0.9, 0.9]))
    first = _ask_at(study, 0.3)
    for step, value in enumerate([0.3, 0.4]):
        first.report(value, step)
    assert not StageAwarePruner(make_pruner("median")).prune(study, study.get_trials(deepcopy=False)[-1])


def test_status_names_each_trials_stage_and_why_it_was_pruned(tmp_path: Path) -> None:
    from medsweep.search import status_report

    study = _study(tmp_path)
    cut = _ask_at(study, 1.0)
    cut.set_user_attr("stage", "full")
    cut.set_user_attr("stopped_by", "not started: 40 s of the budget left, under the 160 s a full trial takes")
    study.tell(cut, state=TrialState.PRUNED)
    report = status_report(study, "auc")
    row = next(line for line in report.splitlines() if line.startswith(f"{cut.number} "))
    assert "PRUNED" in row and "full" in row
    assert "under the 160 s a full trial takes" in " ".join(report.split())  # the note may wrap
