"""`medsweep paper`: the survey's ten configurations enqueued first, marked, never pruned."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from medsweep.objectives import TrialConfig
from medsweep.search.study._paper import BASELINE_ATTR, admit_baselines, survey_baselines
from medsweep.search.study._space import SearchSpace
from medsweep.search.study._study import load_study
from medsweep.search.cli import main
from medsweep.storage import open_storage

SURVEY = {(b, lr, e) for b in ("InceptionV3", "DenseNet201", "ResNet152V2", "Xception", "VGG19")
          for lr, e in ((1e-4, 20), (1e-5, 40))}


def test_paper_creates_the_study_and_enqueues_ten_baselines(storage_url: str, image_folder: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["paper", "survey", "--data", str(image_folder), "--storage", storage_url])
    assert result.exit_code == 0, result.output
    assert "created study survey: enqueued 10 survey baselines" in result.output
    study, settings = load_study(open_storage(storage_url), "survey")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.WAITING] * 10
    assert {(t.user_attrs[BASELINE_ATTR]) for t in trials} == {b.label for b in survey_baselines()}
    assert {(t.system_attrs["fixed_params"]["backbone"], t.system_attrs["fixed_params"]["learning_rate"],
             t.system_attrs["fixed_params"]["epochs"]) for t in trials} == SURVEY
    assert {t.system_attrs["fixed_params"]["batch_size"] for t in trials} == {5}
    # The default batch sizes did not admit 5; the new study's space does, and nothing else changed.
    assert settings.space["batch_size"] == [4, 5, 8, 16, 32]
    assert settings.space["learning_rate"] == {"low": 1e-6, "high": 1e-2, "log": True}
    # Running it again adds nothing.
    again = runner.invoke(main, ["paper", "survey", "--storage", storage_url])
    assert again.exit_code == 0 and "enqueued 0 survey baselines (it already holds all ten)" in again.output
    assert len(study.get_trials()) == 10


def test_a_baseline_trial_trains_the_template(tmp_path: Path, image_folder: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space_file = tmp_path / "space.yaml"
    space_file.write_text("dropout: {low: 0.1, high: 0.3}\naugmentation: [false]\nimage_size: 96\n")
    result = CliRunner().invoke(main, ["paper", "s", "--data", str(image_folder), "--space", str(space_file),
                                       "--storage", url])
    assert result.exit_code == 0, result.output
    study, settings = load_study(open_storage(url), "s")
    # The searched head and augmentation are pinned to the template's (their ranges widened for it).
    assert settings.space["dropout"] == {"low": 0.1, "high": 0.5, "log": False}
    assert settings.space["augmentation"] == [False, True]
    trial = study.ask()
    config = settings.search_space.suggest(trial)
    assert config == TrialConfig(backbone="InceptionV3", learning_rate=1e-4, epochs=20, batch_size=5, image_size=96)
    assert (config.dense_units, config.dropout, config.augmentation, config.fine_tune_fraction) == (256, 0.5, True, 0.0)
    assert trial.user_attrs[BASELINE_ATTR] == "InceptionV3, lr 1e-04, 20 epochs"


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_baselines_are_never_pruned(tmp_path: Path, image_folder: Path, pruner: str) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = CliRunner().invoke(main, ["paper", "p", "--data", str(image_folder), "--pruner", pruner, "--storage", url])
    assert result.exit_code == 0, result.output
    study, _ = load_study(open_storage(url), "p")
    baselines = [study.ask() for _ in range(10)]
    assert all(trial.user_attrs.get(BASELINE_ATTR) for trial in baselines)
    for _ in range(12):  # searched trials that did well at every epoch (run through the
        # pruner, so Hyperband records them in its rungs)
        trial = study.ask()
        for step in range(30):
            trial.report(0.9, step)
            trial.should_prune()
        study.tell(trial, 0.9)
    searched = study.ask()
    assert not searched.user_attrs.get(BASELINE_ATTR)
    searched_pruned, baselines_pruned = False, set()
    for step in range(30):  # the same poor curve for all, until the pruner stops the searched one
        for trial in (*baselines, searched):
            trial.report(0.1, step)
        baselines_pruned |= {trial.number for trial in baselines if trial.should_prune()}
        searched_pruned = searched_pruned or searched.should_prune()
    assert searched_pruned and not baselines_pruned


def test_a_space_that_fixes_a_baseline_parameter_is_refused(tmp_path: Path, image_folder: Path) -> None:
    space_file = tmp_path / "space.yaml"
    space_file.write_text("backbone: VGG19\n")
    result = CliRunner().invoke(main, ["paper", "s", "--data", str(image_folder), "--space", str(space_file),
                                       "--storage", f"sqlite:///{tmp_path / 'studies.db'}"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: the search space fixes backbone to 'VGG19', but the survey baselines need backbone InceptionV3, "
        "DenseNet201, ResNet152V2, Xception, VGG19; remove backbone from the space file or search over it")


def test_an_existing_study_without_batch_size_5_is_refused(tmp_path: Path, image_folder: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["create", "plain", "--data", str(image_folder), "--storage", url]).exit_code == 0
    result = runner.invoke(main, ["paper", "plain", "--storage", url])
    assert result.exit_code == 1
    assert "cannot hold the survey baselines: its search space does not admit batch_size 5" in result.output
    assert load_study(open_storage(url), "plain")[0].get_trials() == []
    missing = runner.invoke(main, ["paper", "new", "--storage", url])
    assert missing.exit_code == 1 and "pass --data DIR" in missing.output


def test_admit_baselines_leaves_an_admitting_space_alone() -> None:
    space = SearchSpace.default({"batch_size": [5, 10], "epochs": {"low": 10, "high": 50},
                                 "frozen_warmup_epochs": {"low": 0, "high": 10}, "augmented_views": [0, 4]})
    assert admit_baselines(space).spec == space.spec
    # The default space's cached views and warm-up gain the template's on-the-fly augmentation and none.
    widened_default = admit_baselines(SearchSpace.default()).spec
    assert widened_default["augmented_views"] == [0, 4]
    assert widened_default["frozen_warmup_epochs"]["low"] == 0
    narrow = SearchSpace.default({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "epochs": [20, 30]})
    widened = admit_baselines(narrow).spec
    assert widened["learning_rate"] == {"low": 1e-5, "high": 1e-2, "log": True}
    assert widened["epochs"] == [20, 30, 40]


def test_paper_takes_creates_data_and_split_options(tmp_path: Path, image_folder: Path) -> None:
    """The baselines are judged on the same splits and folds as the search: paper builds the
    study's data exactly as create would, and refuses options an existing study does not have."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    runner = CliRunner()
    options = ["--data", str(image_folder), "--cv", "3", "--test-fraction", "0.25", "--split-seed", "7"]
    result = runner.invoke(main, ["paper", "cv", *options, "--storage", url])
    assert result.exit_code == 0, result.output
    assert "test" in result.output.splitlines()[0]  # create's description of the data and splits
    _, settings = load_study(open_storage(url), "cv")
    assert (settings.data.cv, settings.data.test_fraction, settings.data.split_seed) == (3, 0.25, 7)
    assert settings.data.data_dir == str(image_folder.resolve())

    # The same options again are fine (nothing new to enqueue); other ones are one-line errors.
    again = runner.invoke(main, ["paper", "cv", *options, "--storage", url])
    assert again.exit_code == 0 and "already holds all ten" in again.output
    changed = runner.invoke(main, ["paper", "cv", *options[:-2], "--cv", "5", "--split-seed", "7", "--storage", url])
    assert changed.exit_code == 1
    assert changed.output.startswith("error: study 'cv' was created with --cv 3, not --cv 5;")
    assert changed.output.count("\n") == 1
    assert len(load_study(open_storage(url), "cv")[0].get_trials()) == 10

    bad = runner.invoke(main, ["paper", "new", "--cv", "4", "--storage", url])
    assert bad.exit_code == 1 and "pass --data FOLDER" in bad.output
