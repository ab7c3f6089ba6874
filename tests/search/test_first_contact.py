"""First contact stays clean: no TensorFlow/absl/CUDA start-up lines and no Optuna INFO lines
unless --verbose, predict/evaluate reject bad images before TensorFlow loads, and the demo
gives the same trials on every run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..conftest import write_image_folder

# Start-up lines a user must not see on a CPU machine.
NOISE = re.compile(r"cuda|absl|oneDNN|^I tensorflow|^[IWE]\d{4} |cpu_feature_guard|^\[I ", re.IGNORECASE | re.MULTILINE)


def medsweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsweep.search.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def fake_model(path: Path, classes: list[str]) -> Path:
    """A .keras file holding only medsweep's metadata: enough for the checks that run before
    TensorFlow, which must reject bad images without ever opening the model."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("medsweep.json", json.dumps({"class_names": classes, "config": {"image_size": 32}}))
    return path


def run_in_process(args: list[str]) -> tuple[int, str, bool]:
    """Exit code, output and whether TensorFlow was imported, for one CLI call in a fresh process."""
    script = f"""
import sys
from click.testing import CliRunner
from medsweep.search.cli import main
result = CliRunner().invoke(main, {args!r})
print(result.exit_code)
print(result.output.strip().replace(chr(10), ' | '))
print("tensorflow" in sys.modules or "keras" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, output, imported = done.stdout.strip().splitlines()[-3:]
    return int(code), output, imported == "True"


def test_predict_rejects_a_missing_or_corrupt_image_before_tensorflow(tmp_path: Path, image_folder: Path) -> None:
    model = fake_model(tmp_path / "model.keras", ["abdomen", "chest x-ray"])
    good = str(sorted((image_folder / "abdomen").iterdir())[0])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)

    code, output, imported = run_in_process(["predict", str(model), good, str(tmp_path / "missing.png")])
    assert code == 1 and "missing.png does not exist" in output and output.startswith("error: ")
    assert not imported

    code, output, imported = run_in_process(["predict", str(model), good, str(corrupt)])
    assert code == 1 and "corrupt.png cannot be decoded" in output
    assert not imported


def test_evaluate_rejects_a_corrupt_image_before_tensorflow(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "EVAL", {"abdomen": 2, "chest x-ray": 2})
    (data / "abdomen" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 32)
    model = fake_model(tmp_path / "model.keras", ["abdomen", "chest x-ray"])
    code, output, imported = run_in_process(["evaluate", str(model), "--data", str(data)])
    assert code == 1 and "broken.jpg cannot be decoded" in output
    assert not imported


def test_optuna_info_lines_only_with_verbose(tmp_path: Path, image_folder: Path, tiny_space_file: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    quiet = medsweep("create", "q", "--data", str(image_folder), "--space", str(tiny_space_file), "--storage", storage)
    assert quiet.returncode == 0, quiet.stderr
    assert not NOISE.search(quiet.stderr), quiet.stderr
    loud = medsweep("--verbose", "create", "v", "--data", str(image_folder), "--space", str(tiny_space_file),
                    "--storage", storage)
    assert loud.returncode == 0, loud.stderr
    assert "[I " in loud.stderr and "A new study created" in loud.stderr


def _trials(output: str) -> list[str]:
    """The demo's trial table rows without the seconds column (timing differs between runs),
    each with its params and note when a narrow terminal put them on lines of their own."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if re.match(r"^\d+\s+(COMPLETE|PRUNED|FAIL)\s", line):
            rows.append(line.split())
        elif rows and line.startswith(" ") and not line.startswith("    trial"):
            rows[-1] += line.split()
        elif rows and not line.startswith(" "):
            break
    return [" ".join(row[:4] + row[5:]) for row in rows]


@pytest.mark.slow
def test_demo_is_quiet_and_gives_the_same_trials_twice(tmp_path: Path) -> None:
    runs = [medsweep("demo", "--workdir", str(tmp_path / f"run{i}"), "--n-trials", "2") for i in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert not NOISE.search(run.stderr), run.stderr
        assert "5/5 predictions" in run.stdout
    first, second = (_trials(run.stdout) for run in runs)
    assert len(first) == 2
    assert first == second


def _long_study(tmp_path: Path, image_folder: Path, tiny_space_file: Path) -> str:
    """A cross-validated study whose trials carry the default space's seven parameters, 10-fold
    intervals, tie marks and a long note: the widest rows `status` prints."""
    import datetime

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    storage = f"sqlite:///{tmp_path / 's.db'}"
    created = medsweep("create", "wide", "--data", str(image_folder), "--space", str(tiny_space_file), "--cv", "3",
                       "--storage", storage)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="wide", storage=storage)
    distributions = {"backbone": CategoricalDistribution(["InceptionV3", "DenseNet201", "ResNet152V2"]),
                     "learning_rate": FloatDistribution(1e-6, 1e-2, log=True), "epochs": IntDistribution(5, 40),
                     "batch_size": CategoricalDistribution([4, 8, 16, 32]),
                     "fine_tune_fraction": CategoricalDistribution([0.0, 0.3, 1.0]),
                     "frozen_warmup_epochs": IntDistribution(1, 10),
                     "backbone_lr_factor": CategoricalDistribution([0.1, 1.0])}
    start = datetime.datetime(2026, 1, 1)
    for number, (backbone, five, state) in enumerate((("InceptionV3", [0.90, 0.94, 0.86, 0.92, 0.88], "COMPLETE"),
                                                      ("DenseNet201", [0.89, 0.95, 0.84, 0.90, 0.89], "COMPLETE"),
                                                      ("ResNet152V2", [0.60, 0.66, 0.58, 0.63, 0.61], "PRUNED"))):
        folds = five * 2
        mean = sum(folds) / len(folds)
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, state=optuna.trial.TrialState[state], value=mean if state == "COMPLETE" else None,
            datetime_start=start, datetime_complete=start + datetime.timedelta(seconds=1234.5), trial_id=number,
            params={"backbone": backbone, "learning_rate": 0.000123456, "epochs": 37, "batch_size": 16,
                    "fine_tune_fraction": 0.3, "frozen_warmup_epochs": 7, "backbone_lr_factor": 0.1},
            distributions=distributions, intermediate_values={0: mean, 1: mean},
            user_attrs={"cv": {"mean": mean, "folds": folds, "ci95": [mean - 0.051, mean + 0.049], "validation_share": 0.2},
                        "history": {"loss": [1.0] * 37, "val_auc": [mean] * 37},
                        **({"stopped_by": "pruned after fold 2 of 10: the running mean is below the median of the "
                                          "trials that reached that fold"} if state == "PRUNED" else {})},
            system_attrs={}))
    return storage


def test_status_fits_an_80_column_terminal(tmp_path: Path, image_folder: Path, tiny_space_file: Path) -> None:
    storage = _long_study(tmp_path, image_folder, tiny_space_file)
    narrow = subprocess.run([sys.executable, "-m", "medsweep.search.cli", "status", "wide", "--storage", storage],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(map(len, lines)) <= 80, "\n".join(line for line in lines if len(line) > 80)
    rows = [line for line in lines if re.match(r"^\d+ +(COMPLETE|PRUNED)", line)]
    assert len(rows) == 3 and "best" in rows[0] and "~best p=" in rows[1] and "[0.8" in rows[0]
    # the params and the note moved under their trial, whole
    text = " ".join(line.strip() for line in lines)
    for backbone in ("InceptionV3", "DenseNet201", "ResNet152V2"):
        assert f"backbone={backbone} learning_rate=0.000123 epochs=37" in text
    assert "note: pruned after fold 2 of 10: the running mean is below the median of the trials that reached" in text
    assert "best: trial 0, auc 0.9" in text and "backbone_lr_factor=0.1)" in text

    wide = subprocess.run([sys.executable, "-m", "medsweep.search.cli", "status", "wide", "--storage", storage],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    rows = [line for line in wide.stdout.splitlines() if re.match(r"^\d+ +(COMPLETE|PRUNED)", line)]
    assert len(rows) == 3 and all("backbone=" in row for row in rows)  # one line per trial where it fits
    assert rows[2].endswith("trials that reached that fold")


SURVEY_FILES = ["inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"]


def _weights_lines(tmp_path: Path, image_folder: Path, name: str, space: str | None,
                   monkeypatch: pytest.MonkeyPatch, *extra: str) -> list[str]:
    from click.testing import CliRunner

    from medsweep.search.cli import main

    args = ["create", name, "--data", str(image_folder), "--storage", f"sqlite:///{tmp_path / 'w.db'}", *extra]
    if space is not None:
        (tmp_path / f"{name}.yaml").write_text(space)
        args += ["--space", str(tmp_path / f"{name}.yaml")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[1:]


def _real_weights_file(path: Path) -> Path:
    """A real Keras weights file under `path`'s name (the MobileNet alpha 0.25 one from
    ../shared/weights where it exists; its bytes are not read, only its presence counts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import shutil

    from ..conftest import SHARED_WEIGHTS

    source = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"
    if source.is_file():
        shutil.copyfile(source, path)
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1024))
    return path


def test_create_names_the_weights_files_the_space_needs(tmp_path: Path, image_folder: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    keras_home = tmp_path / "keras home"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    models = keras_home / "models"

    # The default space: the survey's five ImageNet files, none downloaded yet.
    lines = _weights_lines(tmp_path, image_folder, "default", None, monkeypatch)
    assert lines[0] == f"weights: the space needs 5 ImageNet weights files from {models}, none present on this machine:"
    assert lines[1:6] == [f"  missing  {name} ({backbone})" for name, backbone in
                          zip(SURVEY_FILES, ("InceptionV3", "DenseNet201", "ResNet152V2", "Xception", "VGG19"))]
    advice = " ".join(line.strip() for line in lines[6:])
    assert "downloads each missing file" in advice and "without internet access" in advice
    assert f"copy the files into {models} on every worker machine" in advice

    # Two of them in Keras' cache: named present, the others still missing.
    for name in SURVEY_FILES[1::3]:
        _real_weights_file(models / name)
    lines = _weights_lines(tmp_path, image_folder, "cached", None, monkeypatch)
    assert "2 missing" not in lines[0] and "3 missing on this machine" in lines[0]
    assert f"  present  {SURVEY_FILES[1]} (DenseNet201)" in lines and f"  present  {SURVEY_FILES[4]} (VGG19)" in lines
    assert f"  missing  {SURVEY_FILES[0]} (InceptionV3)" in lines

    # A MobileNet file's name depends on alpha and size; all present: no advice.
    # (alpha stays 1.0: VGG19 has no alpha, and a space whose combinations cannot run is refused.)
    _real_weights_file(models / "mobilenet_1_0_224_tf_no_top.h5")
    lines = _weights_lines(tmp_path, image_folder, "mobile", "backbone: [MobileNet, VGG19]\n", monkeypatch)
    assert lines == [f"weights: the space needs 2 ImageNet weights files from {models}, all present on this machine:",
                     "  present  mobilenet_1_0_224_tf_no_top.h5 (MobileNet)",
                     f"  present  {SURVEY_FILES[4]} (VGG19)"]
    # --resume (which must repeat the study's options) reports the same files again
    assert _weights_lines(tmp_path, image_folder, "mobile", "backbone: [MobileNet, VGG19]\n", monkeypatch,
                          "--resume") == lines

    # A weights folder (the air-gapped way) is the user's own promise: a file missing there is an
    # error at create, naming the file; any size's MobileNet file of that alpha will do.
    folder = tmp_path / "weights"
    _real_weights_file(folder / "mobilenet_1_0_128_tf_no_top.h5")
    folder_space = f"backbone: [MobileNet, VGG19]\nimage_size: 64\nweights: {folder}\n"
    with pytest.raises(AssertionError, match=f"weights folder {folder} has no {SURVEY_FILES[4]} for VGG19"):
        _weights_lines(tmp_path, image_folder, "folder", folder_space, monkeypatch)
    _real_weights_file(folder / SURVEY_FILES[4])
    lines = _weights_lines(tmp_path, image_folder, "folder", folder_space, monkeypatch)
    assert lines[:3] == [f"weights: the space needs 2 weights files from {folder}, all present on this machine:",
                         "  present  mobilenet_1_0_128_tf_no_top.h5 (MobileNet)", f"  present  {SURVEY_FILES[4]} (VGG19)"]

    # weights: none needs no file and says nothing about weights.
    lines = _weights_lines(tmp_path, image_folder, "none", "weights: none\n", monkeypatch)
    assert not [line for line in lines if "weights" in line]
