"""Trustworthy numbers end to end: a cross-validated study with a locked test split and
fold-wise pruning, the export naming its interval, `train --final` measuring the test set
once, `evaluate` with bootstrap intervals, sensitivity at a target specificity, and a
three-class study over PostgreSQL. Real Keras training on 32 px images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from medsweep.objectives.model import read_model_metadata
from medsweep.search import run_worker
from medsweep.search.cli import main
from medsweep.storage import open_storage

CV_SPACE = """\
backbone: VGG19
image_size: 32
weights: none
augmentation: false
learning_rate: [0.001, 0.5]
epochs: [2]
batch_size: [8]
fine_tune_fraction: 0.0  # the head only: lr 0.5 then trains badly but stays finite, so folds prune it
frozen_warmup_epochs: 0
"""


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code != 0
    return result.output


@pytest.mark.slow
def test_cross_validated_study_with_pruning_locked_test_final_model_and_evaluation(
        tmp_path: Path, image_folder: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'cv.db'}"
    space = tmp_path / "space.yaml"
    space.write_text(CV_SPACE)
    planted = next((image_folder / "abdomen").glob("*.png"))
    shutil.copyfile(planted, image_folder / "abdomen" / "planted copy.png")
    created = cli("create", "cv", "--data", str(image_folder), "--space", str(space), "--cv", "3",
                  "--test-fraction", "0.2", "--metric", "loss", "--storage", storage)
    assert "25 images" in created and "1 duplicate file(s) in 1 set(s)" in created and "24 groups" in created
    assert "locked as test" in created and "3-fold cross-validation x 1 repeat(s)" in created

    study = optuna.load_study(study_name="cv", storage=open_storage(storage))
    settings = study.user_attrs["medsweep"]["data"]
    assert (settings["cv"], settings["repeats"], settings["test_fraction"]) == (3, 1, 0.2)
    for learning_rate in (0.001, 0.001, 0.5):  # two sound trials, then one that diverges
        study.enqueue_trial({"learning_rate": learning_rate})
    run_worker(open_storage(storage), "cv", n_trials=3)

    trials = study.get_trials()
    good, bad = trials[0], trials[2]
    assert good.state == TrialState.COMPLETE
    cv = good.user_attrs["cv"]
    assert set(cv) >= {"mean", "std", "ci95", "folds"} and len(cv["folds"]) == 3
    assert cv["ci95"][0] < cv["mean"] < cv["ci95"][1] and good.value == pytest.approx(cv["mean"])
    running = [good.intermediate_values[step] for step in range(3)]
    assert running == pytest.approx([np.mean(cv["folds"][:n]) for n in (1, 2, 3)])
    assert good.user_attrs["metrics"]["folds"] == 3
    assert len(good.user_attrs["history"]["val_loss"]) == 2  # fold mean per epoch
    # the diverging trial is stopped after its second fold: the running mean is clearly worse
    assert bad.state == TrialState.PRUNED, (bad.intermediate_values, cv)
    assert sorted(bad.intermediate_values) == [0, 1] and len(bad.user_attrs["cv"]["folds"]) == 2
    assert bad.user_attrs["cv"]["ci95"][0] >= 0  # a log loss interval stops at zero
    assert bad.user_attrs["stopped_by"] == (f"pruned after fold 2 of 3: the running mean loss "
                                            f"{bad.intermediate_values[1]:.4f}, worse than the median of its stage's "
                                            "trials at that step")

    status = cli("status", "cv", "--storage", storage)
    assert "95% CI" in status and "3 folds" in status
    lines = status.splitlines()
    header = lines[1]
    first = next(line for line in lines if line.startswith("0 "))  # params sit on a line of their own
    column = header.index("epochs")
    assert first[column:column + 6].strip() == "2", status  # epochs trained, not the number of folds

    export = tmp_path / "best.yaml"
    cli("export", "cv", "-o", str(export), "--storage", storage)
    document = yaml.safe_load(export.read_text())
    assert document["cv"] == study.best_trial.user_attrs["cv"]
    assert document["test"] == {"locked": True, "measured": False, "note": document["test"]["note"]}

    model = tmp_path / "final.keras"
    final = cli("train", str(export), "--final", "-o", str(model), "--bootstrap", "30")
    measured = yaml.safe_load(export.read_text())["test"]
    assert f"locked test set, {measured['images']} images, measured once" in final and "auc" in final
    assert measured["measured"] and 4 <= measured["images"] <= 6 and "accuracy" in measured["metrics"]
    metadata = read_model_metadata(model)
    assert metadata["trained_images"] + measured["images"] == 25
    assert metadata["test"]["metrics"] == measured["metrics"]
    assert "already measured" in cli_error("train", str(export), "--final", "-o", str(model), "--bootstrap", "30")

    evaluated = cli("evaluate", str(model), "--data", str(image_folder), "--bootstrap", "50")
    assert "25 images" in evaluated and "95% CI" in evaluated
    auc_line = next(line for line in evaluated.splitlines() if line.startswith("auc "))
    assert auc_line.count("[") == 1


@pytest.mark.slow
def test_sensitivity_at_specificity_threshold_is_chosen_on_validation_and_applied_to_test(
        tmp_path: Path, image_folder: Path, three_class_folder: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'sens.db'}"
    space = tmp_path / "space.yaml"
    space.write_text(CV_SPACE.replace("[0.001, 0.5]", "0.001"))
    assert "two classes" in cli_error("create", "three", "--data", str(three_class_folder), "--space", str(space),
                                      "--metric", "sens@spec=0.9", "--storage", storage)
    cli("create", "sens", "--data", str(image_folder), "--space", str(space), "--test-fraction", "0.25",
        "--metric", "sens@spec=0.80", "--storage", storage)
    run_worker(open_storage(storage), "sens", n_trials=1)
    trial = optuna.load_study(study_name="sens", storage=open_storage(storage)).trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.value == trial.user_attrs["metrics"]["sens@spec=0.8"]
    assert trial.user_attrs["metrics"]["sens@spec=0.8 specificity"] >= 0.8

    export = tmp_path / "best.yaml"
    cli("export", "sens", "-o", str(export), "--storage", storage)
    threshold = yaml.safe_load(export.read_text())["threshold"]
    assert threshold["value"] == trial.user_attrs["metrics"]["sens@spec=0.8 threshold"]
    assert threshold["target_specificity"] == 0.8 and "never on test data" in threshold["chosen_on"]
    model = tmp_path / "final.keras"
    cli("train", str(export), "--final", "-o", str(model), "--bootstrap", "30")
    test = yaml.safe_load(export.read_text())["test"]
    assert test["metrics"]["threshold"] == threshold["value"]
    assert {"sensitivity at threshold", "specificity at threshold"} <= set(test["metrics"])
    assert read_model_metadata(model)["threshold"]["value"] == threshold["value"]
    evaluated = cli("evaluate", str(model), "--data", str(image_folder), "--bootstrap", "20")
    assert f"threshold {threshold['value']:.4f} from the model" in evaluated
    assert "sensitivity at threshold" in evaluated


@pytest.mark.slow
@pytest.mark.postgres
def test_three_class_cross_validated_study_end_to_end(postgres_url: str, tmp_path: Path,
                                                       three_class_folder: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(CV_SPACE.replace("[0.001, 0.5]", "0.001") + "class_weight: [balanced]\noversample: true\n")
    for image in sorted((three_class_folder / "class c").iterdir())[:3]:
        image.unlink()  # 10, 10 and 7 images: a little imbalance for the balancing options
    created = cli("create", "three", "--data", str(three_class_folder), "--space", str(space), "--cv", "3",
                  "--test-fraction", "0.2", "--metric", "balanced_accuracy", "--storage", postgres_url)
    assert "classes class a, class b, class c" in created
    run_worker(open_storage(postgres_url), "three", n_trials=1)
    trial = optuna.load_study(study_name="three", storage=open_storage(postgres_url)).trials[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["config"]["class_weight"] == "balanced" and trial.user_attrs["config"]["oversample"]
    metrics = trial.user_attrs["metrics"]
    assert {"sensitivity[class a]", "sensitivity[class b]", "sensitivity[class c]", "auc"} <= set(metrics)
    assert np.asarray(metrics["confusion_matrix"]).shape == (3, 3)
    assert len(trial.user_attrs["cv"]["folds"]) == 3

    export = tmp_path / "best.yaml"
    cli("export", "three", "-o", str(export), "--storage", postgres_url)
    model = tmp_path / "three.keras"
    final = cli("train", str(export), "--final", "-o", str(model), "--bootstrap", "30")
    assert "sensitivity[class b]" in final
    test = yaml.safe_load(export.read_text())["test"]
    assert np.asarray(test["metrics"]["confusion_matrix"]).shape == (3, 3)
    evaluated = cli("evaluate", str(model), "--data", str(three_class_folder), "--bootstrap", "20")
    assert "sensitivity[class c]" in evaluated
    image = next((three_class_folder / "class b").glob("*.png"))
    predicted = cli("predict", str(model), str(image))
    assert predicted.split("\t")[1] in ("class a", "class b", "class c")


def test_create_from_a_manifest_with_patient_pattern_reports_groups(tmp_path: Path, image_folder: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'm.db'}"
    rows = ["path,label"]
    for class_dir in sorted(image_folder.iterdir()):
        for index, path in enumerate(sorted(class_dir.iterdir())):
            named = path.with_name(f"P{class_dir.name[:3]}{index // 2}_{index}.png")
            path.rename(named)
            rows.append(f"{named},{class_dir.name}")
    manifest = tmp_path / "images.csv"
    manifest.write_text("\n".join(rows) + "\n")
    created = cli("create", "m", "--manifest", str(manifest), "--group-pattern", r"^(P\w+?)_", "--cv", "3",
                  "--metric", "balanced_accuracy", "--storage", storage)
    assert "24 images, classes abdomen, chest x-ray; 12 groups" in created and "objective balanced_accuracy" in created
    data = optuna.load_study(study_name="m", storage=open_storage(storage)).user_attrs["medsweep"]["data"]
    assert data["manifest"] == str(manifest) and data["group_pattern"] == r"^(P\w+?)_" and data["cv"] == 3
    assert "not both" in cli_error("create", "x", "--manifest", str(manifest), "--data", str(image_folder),
                                   "--storage", storage)
    assert "--data FOLDER" in cli_error("create", "x", "--storage", storage)
    assert "unknown objective 'precision'" in cli_error("create", "x", "--data", str(image_folder),
                                                         "--metric", "precision", "--storage", storage)
    assert "--cv and --val-dir exclude each other" in cli_error(
        "create", "x", "--data", str(image_folder), "--val-dir", str(image_folder), "--cv", "3", "--storage", storage)


def test_worker_finds_a_moved_manifest_study(tmp_path: Path, image_folder: Path) -> None:
    import shutil

    from medsweep.search import load_study
    from medsweep.search.workers._worker import open_dataset

    storage = f"sqlite:///{tmp_path / 'm.db'}"
    rows = ["path,label"] + [f"{path.relative_to(image_folder).as_posix()},{path.parent.name}"
                             for path in sorted(image_folder.rglob("*")) if path.is_file()]
    (image_folder / "images.csv").write_text("\n".join(rows) + "\n")
    cli("create", "m", "--manifest", str(image_folder / "images.csv"), "--storage", storage)
    moved = tmp_path / "elsewhere"
    shutil.move(str(image_folder), moved)
    _, settings = load_study(open_storage(storage), "m")
    for new_place in (moved, moved / "images.csv"):  # the folder or the CSV itself
        dataset = open_dataset(settings, str(new_place))
        assert dataset.fingerprint == settings.fingerprint
        assert all(str(path).startswith(str(moved)) for path in dataset.train_files.paths)
