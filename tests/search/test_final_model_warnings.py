"""Issue 18, silently wrong models: a final model whose outputs are constant is not saved without a
word (`train`, `train --final`, `evaluate` print the warning, the model and its card keep it), and
`train --final --calibrate` fits a temperature only where the validation images support one.
Real studies on SQLite, real training at 32 px, the CLI in process."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from click.testing import CliRunner

from medsweep.objectives.model import read_model_metadata
from medsweep.search.cli import main

from ..conftest import TINY_SPACE, write_image_folder


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _study_with_trial(folder: Path, url: str, config: dict, *options: str) -> Path:
    """Create study `s` with `options`, add one finished trial of `config`, export it."""
    space = folder / "space.yaml"
    space.write_text(TINY_SPACE)
    _run("create", "s", "--space", str(space), "--pruner", "none", "--storage", url, *options)
    study = optuna.load_study(study_name="s", storage=url)
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"config": config, "metrics": {"auc": 0.9}}))
    export = folder / "best.yaml"
    _run("export", "s", "-o", str(export), "--storage", url)
    return export


def _uniform_grey_folder(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    """Mid-grey images differing in one pixel by one level: distinct files, the same picture, so a
    network cannot tell the classes apart and its outputs collapse."""
    from PIL import Image

    index = 0
    for name in classes:
        (root / name).mkdir(parents=True)
        for _ in range(per_class):
            pixels = np.full((32, 32), 128, np.uint8)
            pixels[index // 32, index % 32] = 129
            Image.fromarray(pixels, mode="L").save(root / name / f"{name} {index:03d}.png")
            index += 1
    return root


COLLAPSING = {"backbone": "MobileNet", "alpha": 0.25, "image_size": 32, "weights": "none", "learning_rate": 0.001,
              "epochs": 2, "batch_size": 8, "augmentation": False}


@pytest.mark.slow
def test_a_collapsed_three_class_model_is_named_in_train_evaluate_and_its_card(tmp_path: Path) -> None:
    data = _uniform_grey_folder(tmp_path / "data", ("class a", "class b", "class c"), 10)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    export = _study_with_trial(tmp_path, url, COLLAPSING, "--data", str(data), "--test-fraction", "0.3",
                               "--intensity", "raw")
    model = tmp_path / "final.keras"
    out = _run("train", str(export), "--final", "--bootstrap", "20", "-o", str(model))
    warning = next(line for line in out.splitlines() if line.startswith("warning: "))
    assert warning.startswith("warning: outputs constant (spread ") and "test images)" in warning, out
    assert read_model_metadata(model)["warnings"] == [warning[len("warning: "):]]
    card = (tmp_path / "final.card.md").read_text()
    assert "## Warnings" in card and warning[len("warning: "):] in card
    assert card.index("## Warnings") < card.index("## Model details")

    evaluated = _run("evaluate", str(model), "--data", str(data), "--bootstrap", "0", "--storage", url)
    assert "warning: outputs constant (spread " in evaluated and "across 30 images)" in evaluated, evaluated
    remeasured = _run("evaluate", str(model), "--test", "--remeasure", "--bootstrap", "0", "--storage", url)
    assert "test images): the network does not see the images" in remeasured, remeasured

    plain = _run("train", str(export), "--data", str(data), "-o", str(tmp_path / "plain.keras"))
    assert "warning: outputs constant (spread " in plain and "across 30 training images)" in plain, plain


def test_one_class_for_every_image_is_named_even_when_outputs_vary() -> None:
    from medsweep.objectives.metrics import constant_output_warning

    outputs = np.column_stack([np.linspace(0.5, 0.9, 6), np.linspace(0.4, 0.05, 6), np.linspace(0.1, 0.05, 6)])
    outputs /= outputs.sum(axis=1, keepdims=True)
    warning = constant_output_warning(outputs, "test images", ["a", "b", "c"])
    assert warning == ("every one of the 6 test images is predicted as 'a': the model does not tell the classes "
                       "apart, whatever its accuracy says")
    assert constant_output_warning(outputs) is None  # without class names: the spread alone (trials)
    two = np.array([0.2, 0.3, 0.4, 0.45])
    assert constant_output_warning(two, "images", ["n", "p"]) is not None  # all below 0.5
    assert constant_output_warning(two, "images", ["n", "p"], threshold=0.35) is None  # the model's threshold
    assert constant_output_warning(two, "images", ["n", "p"], labels=[0, 0, 0, 0]) is None  # all negatives: right
    assert constant_output_warning(two, "images", ["n", "p"], labels=[0, 0, 1, 0]) is not None


LEARNING = {"backbone": "VGG19", "image_size": 32, "weights": "none", "learning_rate": 0.005, "epochs": 5,
            "batch_size": 8, "augmentation": False}


@pytest.mark.slow
def test_calibration_fits_on_a_normal_validation_set(tmp_path: Path) -> None:
    """24 validation images, three of each class labelled as the other (so some answers are wrong):
    enough evidence for a temperature, which the model, its threshold and its card then carry."""
    train = write_image_folder(tmp_path / "train", {"dark": 16, "bright": 16})
    val = write_image_folder(tmp_path / "val", {"dark": 12, "bright": 12}, seed=1)
    for source, target in (("dark", "bright"), ("bright", "dark")):
        for path in sorted((val / source).glob(f"{source} image *.png"))[:3]:
            shutil.move(path, val / target / f"relabelled {path.name}")
    test = write_image_folder(tmp_path / "test", {"dark": 6, "bright": 6}, seed=2)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    export = _study_with_trial(tmp_path, url, LEARNING, "--data", str(train), "--val-dir", str(val),
                               "--test-dir", str(test))
    model = tmp_path / "final.keras"
    out = _run("train", str(export), "--final", "--calibrate", "--bootstrap", "20", "-o", str(model))
    assert "temperature scaling: T = " in out and "kept T = 1" not in out, out
    calibration = read_model_metadata(model)["calibration"]
    assert calibration["validation_images"] == 24 and "skipped" not in calibration
    assert 0.5 <= calibration["temperature"] <= 10 and calibration["temperature"] != 1.0
    assert "Not recalibrated" not in (tmp_path / "final.card.md").read_text()
    assert yaml.safe_load(export.read_text())["calibration"]["temperature"] == calibration["temperature"]
