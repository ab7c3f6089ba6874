"""`create` looks at grey levels: a folder of near-black images (levels 0-2 of 255, as an earlier
copy of the survey's brain MRI set was) is refused with one line, a few such images are reported,
and `--intensity` both unlocks the folder and is stored with the study for every trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from ..conftest import write_image_folder


def _low_range_folder(root: Path, per_class: int = 8, size: int = 40, seed: int = 0) -> Path:
    """Two classes whose pattern survives only at grey levels 0, 1 and 2: class b has a bright
    (level 2) square, class a a dark one, on noise of levels 0-2."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 2, (size, size)).astype(np.uint8)
            top = rng.integers(4, size - 20)
            pixels[top:top + 14, top:top + 14] = 2 if label else 0
            Image.fromarray(pixels, mode="L").save(root / name / f"{name}{index}.png")
    return root


def _medsweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medsweep.search.cli", *args], capture_output=True, text=True, timeout=300)


def test_near_black_folder_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    data = _low_range_folder(tmp_path / "dark")
    database = tmp_path / "studies.db"
    done = _medsweep("create", "dark", "--data", str(data), "--storage", f"sqlite:///{database}")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 16 of 16 images use only a sliver of the grey range")
    assert "grey levels" in lines[0] and "--intensity minmax" in lines[0]
    assert not database.exists()


def test_a_few_low_range_images_are_reported_by_name(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "mixed", {"a": 8, "b": 8})
    _low_range_folder(tmp_path / "dark", per_class=1)
    for name in ("a", "b"):
        (tmp_path / "dark" / name / f"{name}0.png").rename(data / name / "near black.png")
    done = _medsweep("create", "mixed", "--data", str(data), "--storage", f"sqlite:///{tmp_path / 'm.db'}")
    assert done.returncode == 0, done.stderr
    assert "warning: 2 of 18 images use only a sliver" in done.stderr and "near black.png" in done.stderr


def test_intensity_option_is_stored_with_the_study(tmp_path: Path) -> None:
    from medsweep.search.study._study import load_study
    from medsweep.storage import open_storage

    data = _low_range_folder(tmp_path / "dark")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    done = _medsweep("create", "dark", "--data", str(data), "--intensity", "minmax", "--storage", url)
    assert done.returncode == 0, done.stderr
    assert "note: 16 of 16 images" in done.stderr
    _, settings = load_study(open_storage(url), "dark")
    assert settings.search_space.spec["intensity"] == "minmax"
