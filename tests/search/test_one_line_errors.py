"""Hostile inputs that used to end in a traceback (issue 18, "one line, not a traceback"): file
names and text files in other encodings, DICOM for `explain`, models that are not medsweep's or
whose metadata was edited, output that cannot be written, absurd durations. Each gives one
`error:` line and exit 1 (or is handled), and nothing stored changes. The CLI runs as a real
subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest

from ..conftest import TINY_SPACE
from ..workers.conftest import REPO, medsweep
from .test_hostile_inputs import _fails_with_one_line, _sqlite, _study_names, tiny_model  # noqa: F401 (a fixture)


def _create_tiny(url: str, image_folder: Path, tmp_path: Path, name: str = "s") -> None:
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    medsweep("create", name, "--data", str(image_folder), "--space", str(space), storage=url)


# --- file names and text files in other encodings -------------------------------------------

def test_non_utf8_file_name_is_skipped_and_named_and_a_non_utf8_class_folder_is_one_line(
        tmp_path: Path, image_folder: Path) -> None:
    source = os.fsencode(image_folder / "abdomen" / "abdomen image 0.png")
    os.link(source, os.fsencode(image_folder / "abdomen") + b"/caf\xe9 \xff.png")  # a Latin-1 name
    url = _sqlite(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    done = medsweep("create", "s", "--data", str(image_folder), "--space", str(space), storage=url)
    assert "Traceback" not in done.stderr
    assert "1 file name that is not UTF-8 (rename it) (e.g. abdomen/caf\\xe9 \\xff.png)" in done.stdout
    assert "24 images" in done.stdout  # the 24 well-named ones
    os.rename(os.fsencode(image_folder / "chest x-ray"), os.fsencode(image_folder) + b"/chest x-r\xe4y")
    line = _fails_with_one_line(medsweep("create", "t", "--data", str(image_folder), storage=url, check=False),
                                "has a name that is not UTF-8", "convmv")
    assert "chest x-r\\xe4y" in line
    assert _study_names(url) == ["s"]


@pytest.mark.parametrize(("option", "content", "words"), [
    ("--space", "backbone: MobileNet\n# caf\xe9\n".encode("latin-1"), ("not UTF-8 text (byte 0xe9 on line 2)",
                                                                       "iconv -f LATIN1")),
    ("--space", "backbone: MobileNet\n".encode("utf-16"), ("is UTF-16 text", "iconv -f UTF-16")),
    ("--space", b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe" * 20, ("is a binary file, not text",)),
    ("--manifest", "path,label\nTRAIN/a.png,a\n".encode("utf-16"), ("manifest", "is UTF-16 text")),
    ("--manifest", "path,label\nTRAIN/caf\xe9.png,a\n".encode("latin-1"), ("manifest", "not UTF-8 text",
                                                                          "line 2")),
])
def test_text_files_in_other_encodings_are_one_line(tmp_path: Path, image_folder: Path, option: str,
                                                    content: bytes, words: tuple[str, ...]) -> None:
    given = tmp_path / ("given.yaml" if option == "--space" else "given.csv")
    given.write_bytes(content)
    data = ["--data", str(image_folder)] if option == "--space" else []
    url = _sqlite(tmp_path)
    _fails_with_one_line(medsweep("create", "s", *data, option, str(given), storage=url, check=False), *words)
    assert not (tmp_path / "studies.db").exists()


# --- explain reads every format medsweep reads ----------------------------------------------

@pytest.mark.slow  # trains a model and loads TensorFlow
def test_explain_reads_dicom_like_predict(tmp_path: Path, tiny_model: Path) -> None:
    from PIL import Image

    from ..dicom_files import write_dicom

    scan = write_dicom(tmp_path / "scan.dcm", (np.arange(48 * 40).reshape(48, 40) * 7 % 4096).astype(np.uint16))
    medsweep("predict", str(tiny_model), str(scan), storage="sqlite://")
    done = medsweep("explain", str(tiny_model), str(scan), "-o", str(tmp_path / "overlays"), storage="sqlite://")
    assert "Traceback" not in done.stderr
    overlay = tmp_path / "overlays" / "scan.gradcam.png"
    assert done.stdout.startswith(str(overlay))
    with Image.open(overlay) as image:
        assert image.size == (40, 48)  # drawn on the scan at its own size (columns x rows)
    _fails_with_one_line(medsweep("explain", str(tiny_model), str(tmp_path), "-o", str(tmp_path / "o"),
                                  storage="sqlite://", check=False), "is a folder", "explain takes image files")


# --- models that are not medsweep's, or whose medsweep.json was edited ----------------------

def _with_metadata(source: Path, target: Path, change: object) -> Path:
    """A copy of the .keras zip `source` with its medsweep.json changed by `change(metadata)`."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(entries["medsweep.json"])
    change(metadata)  # type: ignore[operator]
    entries["medsweep.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def _metadata_only_model(path: Path, metadata: dict) -> Path:
    """A .keras zip that holds only medsweep.json: enough for the checks that run before TensorFlow."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("medsweep.json", json.dumps(metadata))
    return path


@pytest.mark.parametrize(("metadata", "words"), [
    ({"config": {}}, ("names no class_names", "was edited or comes from elsewhere")),
    ({"class_names": ["tumour"]}, ("names 1 class (['tumour'])", "at least two")),
    ({"class_names": "ab"}, ("not a list of names",)),
    ({"class_names": ["a", "a"]}, ("names a class twice",)),
])
def test_edited_class_names_are_one_line_before_tensorflow(tmp_path: Path, image_folder: Path, metadata: dict,
                                                           words: tuple[str, ...]) -> None:
    model = _metadata_only_model(tmp_path / "edited.keras", metadata)
    image = str(image_folder / "abdomen" / "abdomen image 0.png")
    for command in (["predict", str(model), image], ["explain", str(model), image, "-o", str(tmp_path / "o")],
                    ["evaluate", str(model), "--data", str(image_folder)]):
        _fails_with_one_line(medsweep(*command, storage="sqlite://", check=False), "medsweep.json in", *words)


@pytest.mark.slow  # trains a model and loads TensorFlow
def test_foreign_and_edited_models_are_one_line(tmp_path: Path, tiny_model: Path) -> None:
    from medsweep.objectives import import_keras

    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("L", (40, 40), 90).save(image)
    # Three class names for a two-class output used to print a wrong class, silently.
    three = _with_metadata(tiny_model, tmp_path / "three.keras",
                           lambda m: m.update(class_names=["abdomen", "chest", "head"]))
    _fails_with_one_line(medsweep("predict", str(three), str(image), storage="sqlite://", check=False),
                         "names 3 classes", "output scores 2")
    # A Keras model with a Lambda layer (code in the file) and medsweep's metadata copied in: Keras' safe mode.
    keras = import_keras()
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    foreign = tmp_path / "foreign.keras"
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled)).save(foreign)
    with zipfile.ZipFile(tiny_model) as archive, zipfile.ZipFile(foreign, "a") as target:
        target.writestr("medsweep.json", archive.read("medsweep.json"))
    for command in (["predict", str(foreign), str(image)],
                    ["explain", str(foreign), str(image), "-o", str(tmp_path / "o")]):
        done = medsweep(*command, storage="sqlite://", check=False)
        _fails_with_one_line(done, "holds a Lambda layer (Python code)", "does not load")
        assert len(done.stderr) < 2000, done.stderr  # was about 100 lines of Keras traceback


# --- output that cannot be written ----------------------------------------------------------

def _cli(args: list[str], url: str, **streams: object) -> subprocess.CompletedProcess:
    environment = dict(os.environ, MEDSWEEP_STORAGE=url)
    return subprocess.run([sys.executable, "-m", "medsweep.search.cli", *args], cwd=REPO, env=environment,
                          text=True, timeout=120, **streams)  # type: ignore[arg-type]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_output_to_a_full_disk_a_closed_pipe_or_a_closed_stdout_is_one_line(tmp_path: Path,
                                                                              image_folder: Path) -> None:
    url = _sqlite(tmp_path)
    _create_tiny(url, image_folder, tmp_path)
    for args in (["status", "s"], ["--help"], ["create", "--help"]):
        with open("/dev/full", "w") as full:
            done = _cli(args, url, stdout=full, stderr=subprocess.PIPE)
        line = _fails_with_one_line(subprocess.CompletedProcess(args, done.returncode, "", done.stderr))
        assert line == ("error: cannot write to standard output (No space left on device); free some space, or "
                        "write the output to another disk"), done.stderr
    # A reader that has gone before medsweep writes: EPIPE.
    reader = subprocess.Popen([sys.executable, "-m", "medsweep.search.cli", "status", "s"], cwd=REPO,
                              env=dict(os.environ, MEDSWEEP_STORAGE=url), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    reader.stdout.close()
    _, error = reader.communicate(timeout=120)
    _fails_with_one_line(subprocess.CompletedProcess([], reader.returncode, "", error),
                         "cannot write to standard output (Broken pipe)")


def test_closed_stdout_is_one_line(tmp_path: Path, image_folder: Path) -> None:
    """Started with stdout closed (`>&-`), the lines used to vanish with exit status 0."""
    url = _sqlite(tmp_path)
    _create_tiny(url, image_folder, tmp_path)
    done = subprocess.run(["sh", "-c", f'"{sys.executable}" -m medsweep.search.cli status s >&-'], cwd=REPO,
                          env=dict(os.environ, MEDSWEEP_STORAGE=url), capture_output=True, text=True, timeout=120)
    _fails_with_one_line(subprocess.CompletedProcess([], done.returncode, "", done.stderr),
                         "standard output is closed")


# --- durations ------------------------------------------------------------------------------

def test_absurd_durations_are_refused_before_anything_is_stored(tmp_path: Path, image_folder: Path) -> None:
    from medsweep.search.workers._budget import BUDGET_SECONDS_ATTR
    from medsweep.storage import open_storage

    url = _sqlite(tmp_path)
    _create_tiny(url, image_folder, tmp_path)
    for args, words in (
            (["worker", "s", "--in-process", "--budget", "99999999999h"],
             ("budget '99999999999h' is longer than 30 days", "at most 30d")),
            (["create", "s", "--resume", "--data", str(image_folder), "--budget", "31d"], ("longer than 30 days",)),
            (["worker", "s", "--in-process", "--timeout", "nan"], ("--timeout nan is not a number of seconds",)),
            (["worker", "s", "--in-process", "--timeout", "1e12"], ("--timeout 1,000,000,000,000 s is longer",)),
            (["worker", "s", "--in-process", "--db-down-limit", "inf"], ("--db-down-limit inf",)),
            (["worker", "s", "--in-process", "--max-failures", "0"], ("--max-failures 0 must be at least 1",)),
            (["worker", "s", "--in-process", "--max-failures", "-3"], ("--max-failures -3 must be at least 1",))):
        _fails_with_one_line(medsweep(*args, storage=url, check=False), *words)
    storage = open_storage(url)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("s"))
    assert BUDGET_SECONDS_ATTR not in attrs
    assert optuna.load_study(study_name="s", storage=url).trials == []


def test_the_longest_budget_reaches_the_worker_processes() -> None:
    from medsweep.search.workers._budget import MAX_DURATION_SECONDS, parse_duration
    from medsweep.search.workers._supervisor import WorkerOptions

    arguments = WorkerOptions(budget=MAX_DURATION_SECONDS).child_arguments()
    # Written with :g it was "2.592e+06s", which the child refused as "not a duration".
    assert parse_duration(arguments[arguments.index("--budget") + 1]) == MAX_DURATION_SECONDS
