"""Data sets above the memory budget: decoded once to memory-mapped files, trained the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import TrialConfig, train_trial
from medsweep.objectives.images import DataSpec, ImageDataset

CONFIG = TrialConfig(backbone="VGG19", image_size=32, weights="none", epochs=2, batch_size=8,
                     augmentation=False, learning_rate=1e-3, feature_cache=False)


def _datasets(folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple:
    monkeypatch.setenv("MEDSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    in_memory = ImageDataset.open(DataSpec(str(folder), validation_fraction=0.25)).arrays(32)
    monkeypatch.setenv("MEDSWEEP_MEMORY_LIMIT_MB", "0.01")  # 10 kB: nothing fits
    on_disk = ImageDataset.open(DataSpec(str(folder), validation_fraction=0.25)).arrays(32)
    return in_memory, on_disk


def test_large_data_is_decoded_to_memory_mapped_split_files(image_folder: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    in_memory, on_disk = _datasets(image_folder, monkeypatch, tmp_path)
    assert not isinstance(in_memory.x_train, np.memmap)
    assert isinstance(on_disk.x_train, np.memmap) and isinstance(on_disk.x_val, np.memmap)
    assert np.array_equal(np.asarray(on_disk.x_train), in_memory.x_train)
    assert np.array_equal(np.asarray(on_disk.x_val), in_memory.x_val)
    files = sorted(p.name for p in (tmp_path / "cache" / "decoded").iterdir() if p.suffix == ".npy")
    assert len(files) == 3 and not any(name.startswith(".") for name in files)  # all images + 2 splits, no temp files


def test_training_from_disk_matches_training_from_memory(image_folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    in_memory, on_disk = _datasets(image_folder, monkeypatch, tmp_path)
    from_memory = train_trial(CONFIG, in_memory)
    from_disk = train_trial(CONFIG, on_disk)
    for key in ("loss", "val_loss", "val_auc"):
        assert np.allclose(from_memory.history[key], from_disk.history[key], atol=1e-5), key
    cached = train_trial(CONFIG.replace(feature_cache=True), on_disk)
    assert cached.feature_cache in ("filled", "hit")
    assert abs(cached.metrics["auc"] - from_memory.metrics["auc"]) <= 0.02
