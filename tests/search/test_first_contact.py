"""First contact stays clean: no TensorFlow/absl/CUDA start-up lines and no Optuna INFO lines
unless --verbose, predict/evaluate reject bad images before TensorFlow loads, and the demo
gives the same trials on every run."""

from __future__ import annotations

import json
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
    """The demo's trial table rows without the seconds column (timing differs between runs)."""
    rows = [line.split() for line in output.splitlines() if re.match(r"^\d+\s+(COMPLETE|PRUNED|FAIL)\s", line)]
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
