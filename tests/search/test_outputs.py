"""Issue 18, data lost or silently wrong: no command writes over a file it did not create unless
--force, a command replaces its own earlier output of the same kind and says so, nothing ever
writes over the study's SQLite database, and `demo` keeps out of folders that are not its own.
Real files, real SQLite studies, the real CLI (in process where nothing trains, as a subprocess
for `demo`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from medsweep.search.cli import main

from ..conftest import TINY_SPACE, write_image_folder
from ..workers.conftest import REPO

CONFIG = {"backbone": "MobileNet", "alpha": 0.25, "image_size": 32, "weights": "none", "learning_rate": 0.001,
          "epochs": 1, "batch_size": 8, "augmentation": False}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _refused(*args: str) -> str:
    """The one `error:` line of a refused command."""
    code, output = _run(*args)
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def _study(folder: Path, database: Path, trials: int = 1) -> str:
    """A real SQLite study with `trials` finished trials; returns its URL."""
    url = f"sqlite:///{database}"
    space = folder / "space.yaml"
    space.write_text(TINY_SPACE)
    code, output = _run("create", "s", "--data", str(write_image_folder(folder / "data", {"a": 6, "b": 6})),
                        "--space", str(space), "--storage", url)
    assert code == 0, output
    study = optuna.load_study(study_name="s", storage=url)
    for number in range(trials):
        study.add_trial(optuna.trial.create_trial(value=0.8 - number / 100, user_attrs={"config": CONFIG,
                                                                                       "metrics": {"auc": 0.8}}))
    return url


def _trial_count(url: str) -> int:
    return len(optuna.load_study(study_name="s", storage=url).trials)


def test_export_never_writes_over_the_study_database(tmp_path: Path) -> None:
    victim = tmp_path / "victim.db"
    url = _study(tmp_path, victim, trials=3)
    before = victim.read_bytes()
    for spelling in (str(victim), str(tmp_path / "data" / ".." / "victim.db")):
        for force in ((), ("--force",)):
            line = _refused("export", "s", "-o", spelling, "--storage", url, *force)
            assert "is the study's database (victim.db)" in line and "even with --force" in line, line
    os.symlink(victim, tmp_path / "link.yaml")
    assert "study's database" in _refused("export", "s", "-o", str(tmp_path / "link.yaml"), "--storage", url, "--force")
    assert victim.read_bytes() == before and _trial_count(url) == 3


def test_export_refuses_a_foreign_file_unless_forced_and_replaces_its_own(tmp_path: Path) -> None:
    url = _study(tmp_path, tmp_path / "studies.db")
    notes = tmp_path / "notes.yaml"
    notes.write_text("my: notes\n")
    line = _refused("export", "s", "-o", str(notes), "--storage", url)
    assert line == (f"error: -o: {notes} exists and is not an earlier medsweep export; pass --force to replace it, "
                    "or choose another -o")
    assert notes.read_text() == "my: notes\n"
    code, output = _run("export", "s", "-o", str(notes), "--storage", url, "--force")
    assert code == 0 and f"note: replacing {notes} (--force)" in output, output
    assert "medsweep_export" in yaml.safe_load(notes.read_text())
    code, output = _run("export", "s", "-o", str(notes), "--storage", url)
    assert code == 0 and output.startswith(f"note: replacing earlier export {notes}\n"), output
    fresh = tmp_path / "fresh.yaml"
    code, output = _run("export", "s", "-o", str(fresh), "--storage", url)
    assert code == 0 and "replacing" not in output, output
    # a command that fails says its one line only, not what it would have replaced
    code, output = _run("export", "nosuch", "-o", str(notes), "--storage", url)
    (line,) = output.strip().splitlines()
    assert code == 1 and line.startswith("error: study 'nosuch' does not exist"), output


def test_outputs_that_record_the_locked_test_are_replaced_only_with_force(tmp_path: Path) -> None:
    """`train --final` writes the locked test's one measurement into the export and the model: an
    export or a train run replacing them silently would lose it and allow a second look."""
    import json
    import zipfile

    from medsweep.search._overwrite import MODEL, OutputError, check_outputs

    url = _study(tmp_path, tmp_path / "studies.db")
    best = tmp_path / "best.yaml"
    assert _run("export", "s", "-o", str(best), "--storage", url)[0] == 0
    document = yaml.safe_load(best.read_text())
    document["ensemble_test"] = {"locked": True, "measured": True, "measured_at": "2026-12-05T10:00:00+00:00"}
    best.write_text(yaml.safe_dump(document))
    line = _refused("export", "s", "-o", str(best), "--storage", url)
    assert line == (f"error: -o: {best} is an earlier medsweep export that records the locked test measured by "
                    "`train --final --ensemble` at 2026-12-05T10:00:00+00:00; replacing it would lose that record "
                    "and allow a second look at the test set; pass --force to replace it, or choose another -o")
    assert yaml.safe_load(best.read_text())["ensemble_test"]["measured"] is True
    code, output = _run("export", "s", "-o", str(best), "--storage", url, "--force")
    assert code == 0 and "ensemble_test" not in yaml.safe_load(best.read_text()), output

    # a model whose metadata records the test (written by `train --final`) likewise
    model = tmp_path / "final.keras"
    metadata = {"class_names": ["a", "b"], "test": {"measured": True, "measured_at": "2026-12-05T11:00:00+00:00"}}
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("medsweep.json", json.dumps(metadata))
    with pytest.raises(OutputError, match="records the locked test measured by `train --final` at 2026-12-05T11"):
        check_outputs([(model, MODEL)], option="-o", force=False)
    assert check_outputs([(model, MODEL)], option="-o", force=True) == [f"replacing {model} (--force)"]
    metadata["test"] = {"measured": False}
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("medsweep.json", json.dumps(metadata))
    assert check_outputs([(model, MODEL)], option="-o", force=False) == [f"replacing earlier model {model}"]


def test_report_never_writes_over_the_database_or_its_model_and_replaces_its_own(tmp_path: Path) -> None:
    victim = tmp_path / "victim.db"
    url = _study(tmp_path, victim)
    before = victim.read_bytes()
    assert "study's database" in _refused("report", "s", "-o", str(victim), "--storage", url, "--force")
    model = tmp_path / "model.keras"
    model.write_bytes(b"not really a model")
    assert "is the model this command reads" in _refused("report", "s", "--model", str(model), "-o", str(model),
                                                          "--storage", url, "--force")
    page = tmp_path / "page.html"
    page.write_text("<html>my page</html>")
    assert "not an earlier medsweep report" in _refused("report", "s", "-o", str(page), "--storage", url)
    assert page.read_text() == "<html>my page</html>"
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "history.png").write_bytes(b"\x89PNG\r\n\x1a\nsomeone else's figure")
    line = _refused("report", "s", "-o", str(tmp_path / "r.html"), "--png", str(figures), "--storage", url)
    assert "history.png exists and is not an earlier medsweep report figure" in line and "--force" in line
    assert not (tmp_path / "r.html").exists()  # refused before anything was written
    report = tmp_path / "report.html"
    assert _run("report", "s", "-o", str(report), "--storage", url)[0] == 0
    code, output = _run("report", "s", "-o", str(report), "--storage", url)
    assert code == 0 and f"note: replacing earlier report {report}" in output, output
    assert victim.read_bytes() == before


def test_train_evaluate_and_explain_refuse_foreign_files_before_any_work(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    data = write_image_folder(tmp_path / "data", {"a": 4, "b": 4})
    foreign = tmp_path / "mine.keras"
    foreign.write_bytes(b"PK\x03\x04 someone's zip")
    line = _refused("train", str(config), "--data", str(data), "-o", str(foreign))
    assert "mine.keras exists and is not an earlier medsweep model" in line, line
    card = tmp_path / "final.card.md"
    card.write_text("# my notes\n")
    line = _refused("train", str(config), "--final", "-o", str(tmp_path / "final.keras"))
    assert "final.card.md exists and is not an earlier medsweep model card" in line, line
    assert card.read_text() == "# my notes\n" and foreign.read_bytes() == b"PK\x03\x04 someone's zip"

    plot = tmp_path / "plot.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\nmine")
    line = _refused("evaluate", str(foreign), "--data", str(data), "--plot", str(plot), "--storage", "sqlite://")
    assert "plot.png exists and is not an earlier medsweep reliability diagram" in line, line

    overlays = tmp_path / "overlays"
    overlays.mkdir()
    image = next((data / "a").glob("*.png"))
    (overlays / f"{image.stem}.gradcam.png").write_bytes(b"mine")
    line = _refused("explain", str(foreign), str(image), "-o", str(overlays))
    assert f"{image.stem}.gradcam.png exists and is not an earlier medsweep Grad-CAM overlay" in line, line
    assert (overlays / f"{image.stem}.gradcam.png").read_bytes() == b"mine"


def test_png_marks_tell_each_kind_of_figure_apart(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from medsweep.objectives.evaluation import png_bytes
    from medsweep.objectives.metrics import mark_png_file, png_kind, reliability_diagram, reliability_png
    from medsweep.search._overwrite import OVERLAY_PNG, RELIABILITY_PNG, REPORT_FIGURE_PNG

    diagram = reliability_png(reliability_diagram([0, 1, 1], np.array([0.2, 0.7, 0.9])), tmp_path / "r.png")
    overlay = tmp_path / "o.png"
    overlay.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    plain, figure = tmp_path / "plain.png", tmp_path / "figure.png"
    for path in (plain, figure):
        Image.new("RGB", (4, 4)).save(path)
    mark_png_file(figure, REPORT_FIGURE_PNG.name)
    assert [png_kind(p) for p in (diagram, overlay, plain, figure)] == [RELIABILITY_PNG.name, OVERLAY_PNG.name, None,
                                                                         REPORT_FIGURE_PNG.name]
    assert RELIABILITY_PNG.recognise(diagram) and not RELIABILITY_PNG.recognise(overlay)
    assert OVERLAY_PNG.recognise(overlay) and not OVERLAY_PNG.recognise(plain)
    assert png_kind(tmp_path / "missing.png") is None


def test_report_figure_keys_are_the_figures_it_draws(tmp_path: Path) -> None:
    from medsweep.search.report._report import FIGURE_KEYS, build_report
    from medsweep.search.study._study import load_study
    from medsweep.storage import open_storage

    url = _study(tmp_path, tmp_path / "studies.db")
    study, settings = load_study(open_storage(url), "s")
    assert tuple(item.key for item in build_report(study, settings).figures) == FIGURE_KEYS


# --- demo -------------------------------------------------------------------------------------

def _demo(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MEDSWEEP_STORAGE"}
    return subprocess.run([sys.executable, "-m", "medsweep.search.cli", "demo", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**environment, "PYTHONPATH": str(REPO)})


def test_demo_refuses_a_users_study_folder_even_with_force(tmp_path: Path) -> None:
    """The reported accident: `demo --workdir .` in a folder holding a 21-trial study."""
    project = tmp_path / "project"
    project.mkdir()
    url = _study(project, project / "medsweep.db", trials=21)
    (project / "best.yaml").write_text("my: export\n")
    saved = {p.name: p.read_bytes() for p in project.iterdir() if p.is_file()}
    refused = _demo(project, "--workdir", ".")
    assert refused.returncode == 1 and "holds files an earlier demo did not create" in refused.stderr, refused.stderr
    assert "pass --force" in refused.stderr and "Traceback" not in refused.stderr
    forced = _demo(project, "--workdir", ".", "--force")
    assert forced.returncode == 1, forced.stderr
    assert "medsweep.db, a database the demo did not create; it is never replaced, even with --force" in forced.stderr
    assert {p.name: p.read_bytes() for p in project.iterdir() if p.is_file()} == saved
    assert not (project / "data" / "TRAIN").exists() and _trial_count(url) == 21


def test_demo_default_workdir_stays_medsweep_demo() -> None:
    (workdir,) = [p for p in main.commands["demo"].params if p.name == "workdir"]
    assert workdir.default == "medsweep-demo"


@pytest.mark.slow
def test_demo_with_force_keeps_other_files_and_reruns_in_its_own_folder(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "readme.txt").write_text("keep me")
    first = _demo(tmp_path, "--workdir", str(folder), "--n-trials", "1", "--force")
    assert first.returncode == 0, first.stderr
    assert "note: writing the demo into" in first.stdout and "readme.txt; --force" in first.stdout
    assert (folder / "readme.txt").read_text() == "keep me" and (folder / ".medsweep-demo").is_file()
    # the quick start adds its own study to the demo's database; a second demo keeps it
    database = f"sqlite:///{folder / 'medsweep.db'}"
    optuna.create_study(study_name="lesions", storage=database).add_trial(optuna.trial.create_trial(value=0.5))
    again = _demo(tmp_path, "--workdir", str(folder), "--n-trials", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"note: replacing the earlier demo in {folder}\n"), again.stdout
    assert len(optuna.load_study(study_name="lesions", storage=database).trials) == 1
    assert len(optuna.load_study(study_name="demo", storage=database).trials) == 1  # started afresh


# --- a model's own kinds: replaced with a note -------------------------------------------------

@pytest.mark.slow
def test_train_evaluate_and_explain_replace_their_own_outputs_and_say_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    data = write_image_folder(tmp_path / "data", {"a": 6, "b": 6})
    model = tmp_path / "model.keras"
    assert _run("train", str(config), "--data", str(data), "-o", str(model))[0] == 0
    code, output = _run("train", str(config), "--data", str(data), "-o", str(model))
    assert code == 0 and output.startswith(f"note: replacing earlier model {model}\n"), output
    plot = tmp_path / "plot.png"
    for attempt in range(2):
        code, output = _run("evaluate", str(model), "--data", str(data), "--bootstrap", "0", "--plot", str(plot),
                            "--storage", "sqlite://")
        assert code == 0 and (f"note: replacing earlier reliability diagram {plot}" in output) == bool(attempt), output
    images = sorted((data / "a").glob("*.png"))[:2]
    for attempt in range(2):
        code, output = _run("explain", str(model), *map(str, images), "-o", str(tmp_path / "overlays"))
        assert code == 0 and (f"replacing 2 earlier Grad-CAM overlays in {tmp_path / 'overlays'}" in output) == bool(
            attempt), output
