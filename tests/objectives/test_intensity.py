"""The intensity option: per-image rescaling inside the model, before the backbone's own
preprocessing, the same in training, cached features, saved models and prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medsweep.objectives import ConfigError, TrialConfig, train_trial
from medsweep.objectives.images import DataSpec, ImageDataset
from tests.conftest import SHARED_WEIGHTS

MOBILENET_WEIGHTS = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"


def _rescale(mode: str, images: np.ndarray) -> np.ndarray:
    from medsweep.objectives.model import IntensityRescale

    return np.asarray(IntensityRescale(mode)(images.astype(np.float32)))


def test_minmax_maps_each_image_to_the_full_range() -> None:
    rng = np.random.default_rng(0)
    images = np.stack([rng.integers(0, 3, (8, 8, 3)), rng.integers(40, 90, (8, 8, 3))]).astype(np.float32)
    out = _rescale("minmax", images)
    for image, rescaled in zip(images, out):
        assert rescaled.min() == pytest.approx(0.0) and rescaled.max() == pytest.approx(255.0)
        expected = (image - image.min()) * 255.0 / (image.max() - image.min())  # one range for all channels
        np.testing.assert_allclose(rescaled, expected, atol=1e-3)


def test_percentile_clips_outliers_like_numpy_percentiles() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, (1, 20, 20, 3)).astype(np.float32)
    image[0, 0, 0, 0], image[0, 1, 1, 1] = 255.0, 0.0  # one hot and one cold outlier
    low, high = np.percentile(image[0], [0.5, 99.5])  # numpy's linear interpolation, as MONAI's
    out = _rescale("percentile", image)[0]
    expected = (np.clip(image[0], low, high) - low) * 255.0 / (high - low)
    np.testing.assert_allclose(out, expected, atol=1e-2)
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(255.0, abs=1e-3)
    assert out[0, 0, 0] == pytest.approx(255.0) and out[1, 1, 1] == pytest.approx(0.0)  # clipped


@pytest.mark.parametrize("mode", ["minmax", "percentile"])
def test_constant_image_does_not_divide_by_zero(mode: str) -> None:
    out = _rescale(mode, np.full((2, 8, 8, 3), 7.0, dtype=np.float32))
    assert np.isfinite(out).all() and not out.any()  # MONAI maps a constant image to the bottom of the range


def test_raw_changes_nothing() -> None:
    images = np.random.default_rng(2).integers(0, 3, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(_rescale("raw", images), images)


def test_intensity_is_validated_searchable_and_a_feature_cache_key_part() -> None:
    from medsweep.objectives.config import check_config_value, config_field_type
    from medsweep.objectives.training import feature_key

    with pytest.raises(ConfigError, match="intensity must be one of raw, minmax, percentile"):
        TrialConfig.from_dict({"intensity": "zscore"})
    assert TrialConfig().intensity == "raw" and config_field_type("intensity") is str
    assert check_config_value("intensity", "percentile") == "percentile"
    base = TrialConfig(backbone="VGG19", weights="none", image_size=32)
    raw = feature_key(base, "images", 0)
    assert "intensity" not in raw  # entries cached before the option existed still match
    assert feature_key(base.replace(intensity="minmax"), "images", 0)["intensity"] == "minmax"
    assert len({str(feature_key(base.replace(intensity=m), "images", 0)) for m in ("raw", "minmax", "percentile")}) == 3


def test_search_space_samples_intensity_as_a_choice() -> None:
    from medsweep.search.study._space import Categorical, SearchSpace

    space = SearchSpace({"backbone": "VGG19", "intensity": ["raw", "minmax", "percentile"]})
    assert space.parameters["intensity"] == Categorical(("raw", "minmax", "percentile"))


def test_saved_model_keeps_the_layer(tmp_path: Path) -> None:
    from medsweep.objectives.model import build_model, load_model, save_model

    config = TrialConfig(backbone="MobileNet", alpha=0.25, image_size=32, weights="none", intensity="percentile")
    model = build_model(config, 2)
    assert model.get_layer("intensity").mode == "percentile"
    images = np.random.default_rng(3).integers(0, 3, (4, 32, 32, 3)).astype(np.float32)
    before = model.predict(images, verbose=0)
    loaded, _ = load_model(save_model(model, tmp_path / "m.keras", {"class_names": ["a", "b"]}))
    assert loaded.get_layer("intensity").mode == "percentile"
    np.testing.assert_allclose(loaded.predict(images, verbose=0), before, atol=1e-6)


def write_dim_folder(root: Path, per_class: int = 24, size: int = 48, seed: int = 0) -> Path:
    """Images using only grey levels 0, 1 and 2 of 255 (a bad export): a level-1 disc holding
    a fine level-2 checkerboard (one class) or a few level-2 blobs (the other), sparse noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for label, name in enumerate(["blobs", "checkerboard"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
            image = (((yy - cy) ** 2 + (xx - cx) ** 2) < (size // 3) ** 2).astype(np.uint8)
            inside = image == 1
            if label == 1:
                image[inside & ((yy // 2 + xx // 2 + rng.integers(0, 2)) % 2 == 0)] = 2
            else:
                for _ in range(3):
                    by, bx = rng.integers(size // 4, 3 * size // 4, 2)
                    image[inside & ((yy - by) ** 2 + (xx - bx) ** 2 < 16)] = 2
            image[rng.random((size, size)) < 0.02] = 2
            Image.fromarray(image, mode="L").save(root / name / f"{index}.png")
    return root


@pytest.mark.slow
@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason=f"needs {MOBILENET_WEIGHTS} (real MobileNet weights)")
def test_minmax_separates_near_black_images_that_raw_cannot(tmp_path: Path) -> None:
    data = ImageDataset.open(DataSpec(str(write_dim_folder(tmp_path / "dim")), validation_fraction=0.5)).arrays(48)
    assert data.x_train.max() == 2
    config = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(SHARED_WEIGHTS), image_size=48,
                         augmentation=False, epochs=2, batch_size=8, learning_rate=1e-2, dense_units=32,
                         dropout=0.2, seed=0)
    cache = tmp_path / "cache"
    raw = train_trial(config, data, feature_cache_dir=cache)
    stretched = train_trial(config.replace(intensity="minmax"), data, feature_cache_dir=cache, keep_model=True)
    assert (raw.feature_cache, stretched.feature_cache) == ("filled", "filled")  # intensity is a key part
    # Measured: raw AUC 0.26-0.74 with outputs within 0.02 of each other; minmax AUC 0.99-1.0.
    assert stretched.metrics["auc"] >= 0.85 and stretched.metrics["auc"] > raw.metrics["auc"] + 0.1
    assert stretched.metrics["loss"] < raw.metrics["loss"] - 0.05
    # The full model (images in) rescales as the cached features were: the same outputs.
    full: Any = stretched.model
    np.testing.assert_allclose(full.predict(data.x_val.astype(np.float32), verbose=0)[:, 0],
                               stretched.outputs[:, 1], atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 32, 32, 3), (2, 224, 224, 3), (1, 5, 5, 1)])
def test_percentiles_equal_numpy_at_any_size(shape: tuple[int, ...]) -> None:
    from medsweep.objectives.model._layers import _percentiles

    flat = np.random.default_rng(4).normal(100, 40, (shape[0], int(np.prod(shape[1:])))).astype(np.float32)
    low, high = _percentiles(flat)
    np.testing.assert_allclose(np.stack([low, high]), np.percentile(flat, [0.5, 99.5], axis=1), rtol=1e-5)
