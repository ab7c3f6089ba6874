"""Hostile inputs (issue 11): each one gives one `error:` line and exit 1, or is handled, and
leaves the study storage as it was. The CLI runs as a real subprocess."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest

from ..conftest import POSTGRES_URL, TINY_SPACE, write_image_folder
from ..workers.conftest import REPO, medsweep


def _fails_with_one_line(done: subprocess.CompletedProcess, *expected: str) -> str:
    """The single `error:` line of a failed command, checked for the expected words."""
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    # Before it, only TensorFlow's and Optuna's own log lines (absl, CUDA probing) may appear.
    assert len(errors) == 1 and lines[-1] == errors[0], output
    for word in expected:
        assert word in errors[0], output
    return errors[0]


def _study_names(url: str) -> list[str]:
    from medsweep.storage import open_storage

    return optuna.get_all_study_names(open_storage(url))


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def _uniform_png(path: Path, side: int) -> Path:
    """A valid side x side 8-bit grey PNG written row block by row block: 20000 px is 400 MB of
    pixels but a few hundred kB of file, and neither is ever held in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(6)
    block_rows = 500
    rows = bytes(side + 1) * block_rows  # filter byte 0 + black pixels, per row
    body = [compressor.compress(rows) for _ in range(side // block_rows)]
    body.append(compressor.compress(bytes(side + 1) * (side % block_rows)))
    body.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _uniform_png(tmp_path_factory.mktemp("bomb") / "huge.png", 20000)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, 1-epoch MobileNet (32 px, no weights) saved by `medsweep train`."""
    folder = write_image_folder(tmp_path_factory.mktemp("model-data") / "TRAIN", {"abdomen": 6, "chest": 6})
    config = folder.parent / "config.yaml"
    config.write_text("backbone: MobileNet\nalpha: 0.25\nimage_size: 32\nweights: none\naugmentation: false\n"
                      "learning_rate: 0.001\nepochs: 1\nbatch_size: 8\n")
    model = folder.parent / "model.keras"
    medsweep("train", str(config), "--data", str(folder), "-o", str(model), storage="sqlite://")
    return model


# --- point 4: passwords ---------------------------------------------------------------------

def test_password_in_the_query_string_is_masked(tmp_path: Path) -> None:
    url = "postgresql://ann@127.0.0.1:9/db?password=hunter2query&sslmode=disable"
    line = _fails_with_one_line(medsweep("status", "s", storage=url, check=False), "127.0.0.1:9", "password=***")
    assert "hunter2query" not in line


def test_unencoded_at_sign_in_a_password_is_named_not_shown(tmp_path: Path) -> None:
    url = "postgresql://ann:hun@ter2tail@127.0.0.1:9/db"
    line = _fails_with_one_line(medsweep("status", "s", storage=url, check=False), "unencoded '@'", "%40",
                                "127.0.0.1:9")
    assert "ter2tail" not in line and "hun@" not in line


# --- point 5: tracebacks become one line ----------------------------------------------------

def test_manifest_row_outside_the_manifest_folder_is_used(tmp_path: Path, image_folder: Path) -> None:
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    rows = [f"{path},{path.parent.name}" for path in sorted(image_folder.rglob("*")) if path.is_file()]
    manifest = elsewhere / "data.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    url = _sqlite(tmp_path)
    done = medsweep("create", "m", "--manifest", str(manifest), "--space", str(space), storage=url)
    assert "24 images" in done.stdout


def test_decompression_bomb_is_one_line_in_create(tmp_path: Path, image_folder: Path, bomb_png: Path) -> None:
    (image_folder / "abdomen" / "huge.png").write_bytes(bomb_png.read_bytes())
    url = _sqlite(tmp_path)
    started = time.monotonic()
    done = medsweep("create", "s", "--data", str(image_folder), storage=url, check=False)
    _fails_with_one_line(done, "huge.png", "20000 x 20000", "400 megapixels", "MEDSWEEP_MAX_IMAGE_PIXELS")
    assert time.monotonic() - started < 60
    assert _study_names(url) == []


def test_pixel_limit_is_configurable(tmp_path: Path, image_folder: Path) -> None:
    url = _sqlite(tmp_path)
    done = medsweep("create", "s", "--data", str(image_folder), storage=url, check=False,
                    env={"MEDSWEEP_MAX_IMAGE_PIXELS": "1000"})  # the 40 x 44 px images are above it
    _fails_with_one_line(done, "above the limit", "MEDSWEEP_MAX_IMAGE_PIXELS")


@pytest.mark.slow  # trains and loads a model (about a minute on 2 busy cores)
def test_decompression_bomb_is_one_line_in_predict_and_evaluate(tmp_path: Path, bomb_png: Path,
                                                                tiny_model: Path) -> None:
    _fails_with_one_line(medsweep("predict", str(tiny_model), str(bomb_png), storage="sqlite://", check=False),
                         "400 megapixels")
    folder = write_image_folder(tmp_path / "EVAL", {"abdomen": 2, "chest": 2})
    (folder / "chest" / "huge.png").write_bytes(bomb_png.read_bytes())
    _fails_with_one_line(medsweep("evaluate", str(tiny_model), "--data", str(folder), storage="sqlite://",
                                  check=False), "400 megapixels")


def test_create_that_loses_the_race_is_one_line(tmp_path: Path, image_folder: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Another `create` inserts the study between this one's existence check and its insert."""
    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.search.study import _study
    from medsweep.search._errors import StudyError
    from medsweep.search.study._space import SearchSpace
    from medsweep.storage import open_storage

    url = _sqlite(tmp_path)
    dataset = ImageDataset.open(DataSpec(str(image_folder)))
    storage = open_storage(url)
    _study.create_study(storage, "s", dataset, SearchSpace.default())
    monkeypatch.setattr(_study, "study_exists", lambda storage, name: False)  # the check ran first
    with pytest.raises(StudyError, match="already exists"):
        _study.create_study(storage, "s", dataset, SearchSpace.default())
    assert _study_names(url) == ["s"]


def test_simultaneous_creates_leave_one_study_and_one_line_each(tmp_path: Path, image_folder: Path) -> None:
    url = _sqlite(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    _study_names(url)  # tables exist, as on any storage used before
    command = [sys.executable, "-m", "medsweep.search.cli", "create", "same", "--data", str(image_folder),
               "--space", str(space), "--storage", url]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    assert sum(code == 0 for code, _, _ in results) == 1, results
    for code, out, err in results:
        if code:
            _fails_with_one_line(subprocess.CompletedProcess([], code, out, err), "already exists")
    assert _study_names(url) == ["same"]


def _study_with_a_finished_trial(url: str, image_folder: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    medsweep("create", "s", "--data", str(image_folder), "--space", str(space), storage=url)
    from medsweep.search import load_study
    from medsweep.storage import open_storage

    study, _ = load_study(open_storage(url), "s")
    config = {"backbone": "MobileNet", "alpha": 0.25, "image_size": 32, "weights": "none",
              "learning_rate": 0.001, "epochs": 1, "batch_size": 8, "augmentation": False}
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={"config": config, "metrics": {"auc": 0.8}}))


def test_export_into_a_missing_folder_creates_it_and_a_file_in_the_way_is_one_line(
        tmp_path: Path, image_folder: Path) -> None:
    url = _sqlite(tmp_path)
    _study_with_a_finished_trial(url, image_folder, tmp_path)
    target = tmp_path / "new" / "folder" / "best.yaml"
    medsweep("export", "s", "-o", str(target), storage=url)
    assert "config:" in target.read_text()
    (tmp_path / "plain").write_text("a file")
    _fails_with_one_line(medsweep("export", "s", "-o", str(tmp_path / "plain" / "best.yaml"), storage=url,
                                  check=False), "is a file, not a folder")


def test_train_output_under_a_file_is_refused_before_training(tmp_path: Path, image_folder: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("backbone: MobileNet\nalpha: 0.25\nimage_size: 32\nweights: none\nepochs: 1\n")
    (tmp_path / "plain").write_text("a file")
    started = time.monotonic()
    done = medsweep("train", str(config), "--data", str(image_folder), "-o", str(tmp_path / "plain" / "m.keras"),
                    storage="sqlite://", check=False)
    _fails_with_one_line(done, "is a file, not a folder")
    _fails_with_one_line(medsweep("train", str(config), "--data", str(image_folder), "-o", str(tmp_path / "m.h5"),
                                  storage="sqlite://", check=False), "must end in .keras")
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_empty_and_600_character_study_names(backend: str, tmp_path: Path, image_folder: Path) -> None:
    if backend == "postgresql":
        from ..conftest import _new_postgres_database

        if not POSTGRES_URL:
            pytest.skip("no PostgreSQL: set MEDSWEEP_TEST_POSTGRES_URL or run the tests through scripts/with-postgres.sh")
        url = _new_postgres_database()
    else:
        url = _sqlite(tmp_path)
    for name, words in (("", ("study name is empty",)), ("n" * 600, ("600 characters", "at most 512")),
                        ("   ", ("study name is empty",))):
        _fails_with_one_line(medsweep("create", name, "--data", str(image_folder), storage=url, check=False), *words)
    assert _study_names(url) == []


@pytest.mark.parametrize(("url", "words"), [
    ("postgresql://ann:pw@127.0.0.1:abc/db", ("port that is not a number", "127.0.0.1:abc")),
    ("mysql://ann:pw@127.0.0.1/db", ("MySQLdb", "pip install mysqlclient")),
    ("postgresql+nosuchdriver://ann:pw@127.0.0.1/db", ("nosuchdriver", "does not know")),
])
def test_bad_storage_urls_are_one_line(url: str, words: tuple[str, ...]) -> None:
    line = _fails_with_one_line(medsweep("status", "s", storage=url, check=False), *words)
    assert ":pw@" not in line


# --- point 7: damaged decoded images --------------------------------------------------------

def test_damaged_decoded_file_is_rebuilt_not_trained_on(image_folder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from medsweep.objectives.images import DataSpec, ImageDataset

    monkeypatch.setenv("MEDSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    expected = ImageDataset.open(DataSpec(str(image_folder))).arrays(32)
    monkeypatch.setenv("MEDSWEEP_MEMORY_LIMIT_MB", "0.01")  # everything goes through decoded/*.npy
    ImageDataset.open(DataSpec(str(image_folder))).arrays(32)
    decoded = sorted((tmp_path / "cache" / "decoded").glob("*-train.npy"))
    assert len(decoded) == 1
    with decoded[0].open("r+b") as handle:  # a few flipped bytes in the middle, size unchanged
        handle.seek(decoded[0].stat().st_size // 2)
        handle.write(b"\xff\x00\xff\x00")
    for split in (tmp_path / "cache" / "decoded").glob("*-rows-*.npy"):
        split.unlink()  # the split files are rebuilt from the damaged one only if it is trusted
    with caplog.at_level(logging.WARNING, logger="medsweep.data"):
        again = ImageDataset.open(DataSpec(str(image_folder))).arrays(32)
    assert "damaged (checksum mismatch)" in caplog.text
    assert np.array_equal(np.asarray(again.x_train), expected.x_train)
    assert np.array_equal(np.asarray(again.x_val), expected.x_val)


def test_decoded_file_without_its_checksum_is_rebuilt(image_folder: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from medsweep.objectives.images import DataSpec, ImageDataset

    monkeypatch.setenv("MEDSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDSWEEP_MEMORY_LIMIT_MB", "0.01")
    first = ImageDataset.open(DataSpec(str(image_folder))).arrays(32)
    for checksum in (tmp_path / "cache" / "decoded").glob("*.sha256"):
        checksum.unlink()
    again = ImageDataset.open(DataSpec(str(image_folder))).arrays(32)
    assert np.array_equal(np.asarray(again.x_train), np.asarray(first.x_train))
    assert len(list((tmp_path / "cache" / "decoded").glob("*.sha256"))) == 3


# --- point 9: a changed data folder names the files -----------------------------------------

def test_changed_added_and_removed_files_are_named(tmp_path: Path, image_folder: Path) -> None:
    from PIL import Image

    url = _sqlite(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    medsweep("create", "s", "--data", str(image_folder), "--space", str(space), storage=url)
    changed = image_folder / "abdomen" / "abdomen image 0.png"
    Image.new("L", (40, 40), 200).save(changed)  # same name, new content: 24 files still
    done = medsweep("worker", "s", "--in-process", "--n-trials", "1", storage=url, check=False)
    _fails_with_one_line(done, "changed: train/abdomen/abdomen image 0.png")
    (image_folder / "chest x-ray" / "chest x-ray image 1.jpg").unlink()
    Image.new("L", (40, 40), 20).save(image_folder / "chest x-ray" / "new one.png")
    line = _fails_with_one_line(medsweep("worker", "s", "--in-process", "--n-trials", "1", storage=url,
                                         check=False))
    assert "added: train/chest x-ray/new one.png" in line and "removed: train/chest x-ray/chest x-ray image 1.jpg" in line
    assert "24 files vs 24" not in line
