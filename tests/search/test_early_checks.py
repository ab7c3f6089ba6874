"""Mistakes checked where the user makes them, not trials later (issue 18): spaces no trial can
run, `create --resume` with other options, worker numbers, empty spaces, unknown export formats,
YAML alias bombs and over-long values, the wrong kind of input for `evaluate` and `predict`,
read-only commands on a storage that does not exist, and the model card's budget and input
size. Each gives one `error:` line and exit 1 and leaves the storage as it was."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ..conftest import TINY_SPACE
from ..workers.conftest import medsweep
from .test_hostile_inputs import _fails_with_one_line, _sqlite, _study_names


def _space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- spaces no trial can run ----------------------------------------------------------------

TINY = TINY_SPACE.replace("backbone: MobileNet\nalpha: 0.25\nimage_size: 32\nweights: none\n", "")


@pytest.mark.parametrize(("head", "words"), [
    ("backbone: InceptionV3\nimage_size: 32\nweights: none\n",
     ("image_size 32 is too small for InceptionV3 (minimum 75)",)),
    ("backbone: [MobileNet, Xception]\nimage_size: {low: 32, high: 128}\nweights: none\n",
     ("image_size 32 is too small for Xception (minimum 71)", "the combination backbone 'Xception', image_size 32")),
    ("backbone: MobileNet\nalpha: 0.33\nimage_size: 32\nweights: {weights}\n",
     ("MobileNet has pretrained weights only for alpha 0.25, 0.5, 0.75, 1, not 0.33",)),
    ("backbone: MobileNet\nalpha: [0.25, 0.33]\nimage_size: 32\nweights: imagenet\n",
     ("only for alpha 0.25, 0.5, 0.75, 1, not 0.33", "the combination alpha 0.33")),
    ("backbone: MobileNetV2\nalpha: {low: 0.35, high: 1.0}\nimage_size: 32\n",
     ("alpha: a range of widths", "give a list of those, or set weights: none")),
    ("backbone: [MobileNet, VGG19]\nalpha: 0.5\nimage_size: 32\nweights: none\n",
     ("alpha 0.5 only applies to MobileNet and MobileNetV2, not VGG19",)),
    ("backbone: MobileNet\nalpha: 0.25\nimage_size: 32\nweights: {weights}\n",
     ("weights folder", "has no mobilenet_2_5_224_tf_no_top.h5")),
])
def test_a_space_no_trial_can_run_is_refused_at_create(tmp_path: Path, image_folder: Path, head: str,
                                                      words: tuple[str, ...]) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    space = _space(tmp_path, head.replace("{weights}", str(weights)) + TINY)
    url = _sqlite(tmp_path)
    started = time.monotonic()
    line = _fails_with_one_line(medsweep("create", "s", "--data", str(image_folder), "--space", str(space),
                                         storage=url, check=False), "search space", *words)
    assert "mobilenet_0.33" not in line  # the old hint named a file Keras never shipped
    assert time.monotonic() - started < 30
    assert not (tmp_path / "studies.db").exists()  # refused before the storage was even opened


def test_paper_refuses_a_space_whose_survey_backbones_cannot_run(tmp_path: Path, image_folder: Path) -> None:
    space = _space(tmp_path, "image_size: 64\n")  # the survey's InceptionV3 and Xception need 75 and 71 px
    url = _sqlite(tmp_path)
    _fails_with_one_line(medsweep("paper", "s", "--data", str(image_folder), "--space", str(space), storage=url,
                                  check=False), "image_size 64 is too small for InceptionV3")
    assert _study_names(url) == []


def test_a_config_error_in_a_trial_stops_the_worker_after_that_trial(tmp_path: Path, image_folder: Path) -> None:
    """A study created before `create` checked its space: the first trial that draws InceptionV3
    at 32 px fails, and the worker stops with that line instead of failing trial after trial."""
    from medsweep.search.study._study import SETTINGS_KEY

    url = _sqlite(tmp_path)
    space = _space(tmp_path, TINY_SPACE.replace("backbone: MobileNet\nalpha: 0.25\n", "backbone: [MobileNet, VGG19]\n"))
    medsweep("create", "old", "--data", str(image_folder), "--space", str(space), storage=url)
    study = optuna.load_study(study_name="old", storage=url)
    settings = study.user_attrs[SETTINGS_KEY]
    settings["space"]["backbone"] = ["MobileNet", "InceptionV3"]  # as an older medsweep let it through
    study.set_user_attr(SETTINGS_KEY, settings)
    study.enqueue_trial({"backbone": "InceptionV3"})
    done = medsweep("worker", "old", "--in-process", "--n-trials", "5", "--max-failures", "3", storage=url,
                    check=False)
    _fails_with_one_line(done, "image_size 32 is too small for InceptionV3")
    (only,) = optuna.load_study(study_name="old", storage=url).trials
    assert only.state == TrialState.FAIL and "too small for InceptionV3" in only.user_attrs["fail_reason"]


# --- create --resume with other options -----------------------------------------------------

def test_resume_with_other_data_space_or_metric_is_refused_naming_them(tmp_path: Path, image_folder: Path) -> None:
    from medsweep.search.study._study import SETTINGS_KEY

    url = _sqlite(tmp_path)
    space = _space(tmp_path, TINY_SPACE)
    medsweep("create", "s", "--data", str(image_folder), "--space", str(space), storage=url)
    before = optuna.load_study(study_name="s", storage=url).user_attrs[SETTINGS_KEY]
    same = medsweep("create", "s", "--resume", "--data", str(image_folder), "--space", str(space), storage=url)
    assert same.stdout.startswith("study s: 24 images")
    other_space = _space(tmp_path, TINY_SPACE.replace("epochs: [1, 2]", "epochs: 3"), "other.yaml")
    elsewhere = image_folder.parent / "COPY"
    elsewhere.mkdir()
    for child in image_folder.iterdir():
        (elsewhere / child.name).symlink_to(child, target_is_directory=True)
    line = _fails_with_one_line(
        medsweep("create", "s", "--resume", "--data", str(elsewhere), "--space", str(other_space), "--metric",
                 "accuracy", "--cv", "2", storage=url, check=False),
        "study 's' exists with", f"--data '{image_folder}', not '{elsewhere}'", "--cv 0, not 2",
        "another --space (parameters epochs differ)", "--metric auc, not accuracy", "repeat its options")
    assert "--pruner" not in line
    _fails_with_one_line(medsweep("create", "s", "--resume", "--data", str(image_folder), "--space", str(space),
                                  "--pruner", "none", storage=url, check=False), "--pruner median, not none")
    assert optuna.load_study(study_name="s", storage=url).user_attrs[SETTINGS_KEY] == before


# --- numbers, empty spaces, export formats --------------------------------------------------

def test_empty_space_file_and_an_unknown_export_format_are_refused(tmp_path: Path, image_folder: Path) -> None:
    url = _sqlite(tmp_path)
    for text in ("", "# only a comment\n", "{}\n"):
        _fails_with_one_line(medsweep("create", "s", "--data", str(image_folder), "--space",
                                      str(_space(tmp_path, text)), storage=url, check=False),
                             "is empty", "leave out --space to search the default space")
    exported = tmp_path / "best.yaml"
    config = "config: {backbone: MobileNet, alpha: 0.25, image_size: 32, weights: none, epochs: 1}\n"
    for version in ("99", "'1'", "0", "true"):  # a later format may mean other things by the same fields
        exported.write_text(f"medsweep_export: {version}\n{config}")
        _fails_with_one_line(medsweep("train", str(exported), "--data", str(image_folder), "-o",
                                      str(tmp_path / "m.keras"), storage="sqlite://", check=False),
                             "has export format", "this medsweep reads format 1")
    assert not (tmp_path / "m.keras").exists()


# --- YAML alias bombs and long values -------------------------------------------------------

# "Billion laughs": under 1 KB, 9^8 strings once expanded.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefg", "bcdefgh"))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, image_folder: Path) -> None:
    bomb = _space(tmp_path, BOMB + "backbone: *h\n", "bomb.yaml")
    assert len(bomb.read_bytes()) < 1024
    url = _sqlite(tmp_path)
    for args in (["create", "s", "--data", str(image_folder), "--space", str(bomb)],
                 ["train", str(bomb), "--data", str(image_folder), "-o", str(tmp_path / "m.keras")]):
        started = time.monotonic()
        done = medsweep(*args, storage=url, check=False)
        _fails_with_one_line(done, "uses a YAML alias (*name) at line 2", "write the values out")
        assert time.monotonic() - started < 30  # was 18 s and 2.6 GB, with a 522 MB error line
        assert len(done.stderr) < 1000
    assert not (tmp_path / "studies.db").exists()


def test_values_quoted_in_error_lines_are_cut(tmp_path: Path, image_folder: Path) -> None:
    url = _sqlite(tmp_path)
    huge = _space(tmp_path, f"backbone: {'x' * 500_000}\n", "huge.yaml")
    line = _fails_with_one_line(medsweep("create", "s", "--data", str(image_folder), "--space", str(huge),
                                         storage=url, check=False), "unknown backbone 'xxx", "(500,002 characters)")
    assert len(line) < 400
    listed = _space(tmp_path, f"epochs: [1, {'9' * 300_000}.5]\n", "listed.yaml")
    line = _fails_with_one_line(medsweep("create", "s", "--data", str(image_folder), "--space", str(listed),
                                         storage=url, check=False), "epochs must be a whole number")
    assert len(line) < 400


# --- evaluate and predict on the wrong kind of input ----------------------------------------

def _metadata_only_model(path: Path, metadata: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("medsweep.json", json.dumps(metadata))
    return path


def test_evaluate_on_a_flat_folder_and_predict_on_a_folder_say_what_they_take(tmp_path: Path,
                                                                               image_folder: Path) -> None:
    model = _metadata_only_model(tmp_path / "m.keras", {"class_names": ["abdomen", "chest x-ray"]})
    flat = tmp_path / "TEST"
    flat.mkdir()
    for image in (image_folder / "abdomen").iterdir():
        (flat / image.name).write_bytes(image.read_bytes())
    _fails_with_one_line(medsweep("evaluate", str(model), "--data", str(flat), storage="sqlite://", check=False),
                         "has no class subfolders", "--data wants one subfolder per class (abdomen, chest x-ray)",
                         "`medsweep predict MODEL FILE...` takes loose images")
    _fails_with_one_line(medsweep("predict", str(model), str(flat), storage="sqlite://", check=False),
                         f"{flat} is a folder; predict takes image files", f"{flat}/*.png", "medsweep evaluate")


# --- read-only commands do not create storage -----------------------------------------------

def test_read_only_commands_on_a_missing_sqlite_file_create_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "studeis.db"
    url = f"sqlite:///{typo}"
    model = _metadata_only_model(tmp_path / "m.keras", {"class_names": ["a", "b"], "source": {"study": "s"}})
    for args in (["status", "s"], ["export", "s", "-o", str(tmp_path / "best.yaml")],
                 ["report", "s", "-o", str(tmp_path / "r.html")], ["dashboard", "--port", "1"],
                 ["evaluate", str(model), "--test"]):
        _fails_with_one_line(medsweep(*args, storage=url, check=False),
                             f"SQLite database file {typo} does not exist", "check --storage",
                             "only `medsweep create`, `paper`, `worker` and `demo` make a new one")
        assert not typo.exists(), args
    assert list(tmp_path.iterdir()) == [model]


def test_read_only_commands_on_an_empty_database_create_no_tables(postgres_url: str) -> None:
    import sqlalchemy

    _fails_with_one_line(medsweep("status", "s", storage=postgres_url, check=False),
                         "holds no studies (no Optuna tables in it)")
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# --- the model card -------------------------------------------------------------------------

def test_model_card_names_the_wall_budget_and_the_default_image_size(tmp_path: Path, image_folder: Path) -> None:
    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.search import StudyError
    from medsweep.search._model_card import card_facts, render_model_card, search_facts
    from medsweep.search.study._study import StudySettings
    from medsweep.search.workers._budget import store_budget_seconds

    url = _sqlite(tmp_path)
    dataset = ImageDataset.open(DataSpec(str(image_folder)))
    settings = StudySettings(dataset.spec, dataset.fingerprint, {"epochs": [1, 2]}, "auc", "maximize", "median")
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="b", direction="maximize")
    for value in (0.7, 0.8, 0.9):
        study.add_trial(optuna.trial.create_trial(value=value))
    document = {"config": {"backbone": "MobileNet", "image_size": None, "weights": "none"},
                "objective": {"metric": "auc", "direction": "maximize"}, "study": "b", "trial": 2}
    without = render_model_card(card_facts(document, {}, search=search_facts(study, settings, storage=storage)))
    assert "budget: 3 trials run, no wall-clock budget." in without
    store_budget_seconds(storage, "b", 300)  # `create --budget 5m`
    card = render_model_card(card_facts(document, {}, search=search_facts(study, settings, storage=storage)))
    assert "budget: wall clock 5m (3 trials run)." in card  # was "budget 3 trials run"
    # `create --resume --budget`: the same budget changes nothing, another one is refused
    store_budget_seconds(storage, "b", 300)
    with pytest.raises(StudyError, match="has a budget of 300 s already, not 600 s"):
        store_budget_seconds(storage, "b", 600)
    assert "budget: wall clock 5m" in render_model_card(card_facts(document, {}, search=search_facts(study, settings, storage=storage)))
    assert "resized to 224 px" in card
    assert "| image_size | 224 (the backbone's default) |" in card  # was "| image_size | not recorded |"
