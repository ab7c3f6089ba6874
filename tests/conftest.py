"""Shared fixtures: tiny image folders built on disk, and storages over SQLite and a real
PostgreSQL server (MEDSWEEP_TEST_POSTGRES_URL, set by scripts/with-postgres.sh)."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Frozen trials fill the feature cache; tests (and the workers they start) keep it out of ~/.cache.
os.environ.setdefault("MEDSWEEP_CACHE_DIR", tempfile.mkdtemp(prefix="medsweep-test-features-"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"
POSTGRES_URL = os.environ.get("MEDSWEEP_TEST_POSTGRES_URL")


def write_image_folder(root: Path, classes: dict[str, int], size: int = 40, seed: int = 0,
                       grayscale_every: int = 3) -> Path:
    """Class subfolders of small PNG/JPEG images whose brightness depends on the class, so a
    model can learn them; some grayscale, names with spaces, one file without a suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            base = 60 + 120 * label / max(1, len(classes) - 1)
            pixels = np.clip(rng.normal(base, 25, (size, size + 4 * (index % 3), 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if index % grayscale_every == 0:
                image = image.convert("L")
            if index % 4 == 1:
                image.save(folder / f"{name} image {index}.jpg", format="JPEG")
            elif index % 7 == 2:
                image.save(folder / f"{name}_{index}", format="PNG")  # no suffix, found by content
            else:
                image.save(folder / f"{name} image {index}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes x 12 images, 40 px."""
    return write_image_folder(tmp_path / "TRAIN", {"abdomen": 12, "chest x-ray": 12})


@pytest.fixture
def three_class_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "TRAIN3", {"class a": 10, "class b": 10, "class c": 10})


def _new_postgres_database() -> str:
    import sqlalchemy
    from sqlalchemy.engine import make_url

    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"medsweep_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty PostgreSQL database on the test server."""
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL: set MEDSWEEP_TEST_POSTGRES_URL or run the tests through scripts/with-postgres.sh")
    return _new_postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test over an SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.db'}"
    else:
        if not POSTGRES_URL:
            pytest.skip("no PostgreSQL: set MEDSWEEP_TEST_POSTGRES_URL or run the tests through scripts/with-postgres.sh")
        yield _new_postgres_database()


TINY_SPACE = """\
backbone: MobileNet
alpha: 0.25
image_size: 32
weights: none
augmentation: false
learning_rate: {low: 0.0001, high: 0.01, log: true}
epochs: [1, 2]
batch_size: [8]
fine_tune_fraction: 0.0
frozen_warmup_epochs: 0
backbone_lr_factor: 1.0
"""


@pytest.fixture
def tiny_space_file(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(TINY_SPACE)
    return path
