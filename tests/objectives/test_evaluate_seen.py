"""`evaluate` counts the images that trained or selected the model by content hash, says so first,
and with --exclude-seen measures only the others; a real (untrained) Keras model predicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from medsweep.objectives import DataError, TrialConfig
from medsweep.objectives.evaluation import SEEN_IMAGES_KEY, evaluate_model, open_labeled, seen_image_hashes, seen_images
from medsweep.objectives.model import save_model
from medsweep.search.cli import main


@pytest.fixture
def model_and_folder(tmp_path: Path, image_folder: Path) -> tuple[Path, Path, list[Path]]:
    """A model whose metadata says 8 images trained it and 4 selected it (copies under other names)."""
    from medsweep.objectives.model import build_model

    files = open_labeled(image_folder, ["abdomen", "chest x-ray"])
    trained, selected = list(files.paths[:4]) + list(files.paths[12:16]), [files.paths[4], files.paths[16],
                                                                            files.paths[5], files.paths[17]]
    model = build_model(TrialConfig(backbone="MobileNet", alpha=0.25, image_size=32, weights="none"), 2)
    metadata = {"class_names": ["abdomen", "chest x-ray"], "trained_on": str(tmp_path / "elsewhere"),
                SEEN_IMAGES_KEY: seen_image_hashes(trained, selected)}
    path = save_model(model, tmp_path / "model.keras", metadata)
    # The evaluation folder renames every file: content, not names, must give the overlap away.
    renamed = tmp_path / "renamed"
    for index, source in enumerate(files.paths):
        target = renamed / source.parent.name / f"copy {index}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return path, renamed, trained


def test_seen_images_are_counted_by_content(model_and_folder) -> None:
    from medsweep.objectives.model import read_model_metadata

    path, folder, _ = model_and_folder
    seen = seen_images(read_model_metadata(path), open_labeled(folder, ["abdomen", "chest x-ray"]))
    assert (seen.total, seen.trained, seen.selected, seen.seen, len(seen.unseen)) == (24, 8, 4, 12, 12)
    assert seen.describe().startswith("warning: 12 of 24 images trained (8) or selected (4) this model")
    unknown = seen_images({"class_names": ["a", "b"], "trained_on": str(folder)},
                          open_labeled(folder, ["abdomen", "chest x-ray"]), folder)
    assert not unknown.known and "(the folder it was trained on)" in unknown.describe()


def test_evaluate_reports_overlap_first_and_excludes_seen_images(model_and_folder) -> None:
    path, folder, trained = model_and_folder
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(path), "--data", str(folder), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("warning: 12 of 24 images trained (8) or selected (4)")
    assert "24 images" in result.output.splitlines()[1]
    result = runner.invoke(main, ["evaluate", str(path), "--data", str(folder), "--bootstrap", "0", "--exclude-seen"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == ("excluded 12 of 24 images that trained or selected this model "
                                             "(by content hash); measuring the other 12")
    assert ": 12 images" in result.output.splitlines()[1]
    assert evaluate_model(path, folder, resamples=0, exclude_seen=True).metrics["n"] == 12


def test_exclude_seen_with_nothing_left_is_a_one_line_error(model_and_folder, tmp_path: Path) -> None:
    path, _, trained = model_and_folder
    only_seen = tmp_path / "only_seen"
    for source in trained:
        target = only_seen / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    with pytest.raises(DataError, match="all 8 images"):
        evaluate_model(path, only_seen, resamples=0, exclude_seen=True)
    result = CliRunner().invoke(main, ["evaluate", str(path), "--data", str(only_seen), "--exclude-seen",
                                       "--plot", str(tmp_path / "r.svg")])
    assert result.exit_code == 1 and result.output.startswith("error: plot file") and ".png" in result.output
