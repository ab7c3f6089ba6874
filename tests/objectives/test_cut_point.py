"""The cut-point cache: a fine-tuning trial whose lower backbone is frozen trains only the layers
above the cut, on cached cut outputs, and reaches the live full model's result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medsweep.objectives import TrialConfig, train_trial
from medsweep.objectives.images import ArrayCache, DataSpec, ImageDataset
from medsweep.objectives.model import plan_trial
from tests.conftest import SHARED_WEIGHTS

# The feature cache's tolerances and comparison (docs/training-path.md), shared, not copied.
from .test_feature_cache import LOSS_TOLERANCE
from .test_feature_cache import _assert_same_result as _assert_same_curves
REAL_MOBILENET = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"

TUNED = TrialConfig(backbone="MobileNet", alpha=0.25, weights="none", image_size=48, augmentation=False,
                    fine_tune_fraction=0.3, epochs=2, batch_size=4, learning_rate=1e-3, dense_units=16,
                    dropout=0.3, seed=3)


def _arrays(folder: Path, size: int = 48) -> Any:
    return ImageDataset.open(DataSpec(str(folder))).arrays(size)


def _assert_same_result(live: Any, cached: Any) -> None:
    """The feature cache's comparison (curves, AUC, loss), plus every validation output."""
    _assert_same_curves(live, cached)
    np.testing.assert_allclose(cached.outputs, live.outputs, atol=LOSS_TOLERANCE)


@pytest.mark.parametrize("changes, trunk, augment, views", [
    ({}, "cached", False, 0),
    ({"feature_cache": False}, "live", False, 0),
    ({"augmentation": True}, "live", True, 0),  # on-the-fly augmentation changes the trunk's output
    ({"augmentation": True, "augmented_views": 2}, "cached", False, 2),
    ({"fine_tune_fraction": 1.0}, "cached", False, 0),  # the cut is found later; none fits: live
])
def test_plan_caches_the_frozen_lower_backbone(changes: dict, trunk: str, augment: bool, views: int) -> None:
    plan = plan_trial(TUNED.replace(**changes))
    assert (plan.cut, plan.trunk, plan.augment, plan.views) == ("backbone", trunk, augment, views)
    fallback = plan_trial(TUNED.replace(**changes), cut_cache=False)
    assert (fallback.trunk, fallback.augment, fallback.views) == ("live", TUNED.replace(**changes).augmentation, 0)


@pytest.mark.parametrize("backbone, fraction, kinds", [
    ("MobileNet", 0.3, ("ReLU",)),
    ("VGG19", 0.5, ("MaxPooling2D",)),
    ("ResNet50V2", 0.3, ("Add", "Activation")),
])
def test_cut_is_a_block_boundary_below_every_trainable_layer(backbone: str, fraction: float,
                                                             kinds: tuple[str, ...]) -> None:
    from medsweep.objectives import import_keras
    from medsweep.objectives.model import backbone_cut, build_backbone, set_trainable_layers

    keras = import_keras()
    keras.backend.clear_session()
    config = TrialConfig(backbone=backbone, alpha=0.25 if backbone == "MobileNet" else 1.0, weights="none",
                         image_size=32, fine_tune_fraction=fraction)
    base = build_backbone(config)
    set_trainable_layers(base, fraction, pretrained=False)
    cut = backbone_cut(base)
    assert cut is not None and type(base.get_layer(cut.name)).__name__ in kinds
    assert not any(layer.trainable and layer.weights for layer in base.layers[:cut.index])
    first_trainable = next(i for i, layer in enumerate(base.layers) if layer.trainable and layer.weights)
    assert cut.index <= first_trainable
    # one tensor crosses: the model from the cut reproduces the backbone's output
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    lower = keras.Model(base.input, cut.tensor)
    top = keras.Model(cut.tensor, base.output)
    np.testing.assert_allclose(np.asarray(top(lower(images))), np.asarray(base(images)), atol=1e-5)
    set_trainable_layers(base, 1.0, pretrained=False)
    assert backbone_cut(base) is None  # everything trains: nothing to cache


@pytest.mark.skipif(not REAL_MOBILENET.is_file(), reason=f"needs {REAL_MOBILENET} (real MobileNet weights)")
def test_pretrained_partial_fine_tune_on_cut_outputs_matches_live(image_folder: Path, tmp_path: Path) -> None:
    """Real weights, BatchNorm frozen in inference mode in the trainable top, as in the full model."""
    config = TUNED.replace(weights=str(SHARED_WEIGHTS), image_size=64)
    data = _arrays(image_folder, 64)
    cache = tmp_path / "cache"
    live = train_trial(config.replace(feature_cache=False), data, feature_cache_dir=cache)
    filled = train_trial(config, data, feature_cache_dir=cache)
    hit = train_trial(config, data, feature_cache_dir=cache, keep_model=True)
    assert (live.feature_cache, filled.feature_cache, hit.feature_cache) == ("off", "filled", "hit")
    assert filled.trunk_cut and filled.trunk_cut.startswith("conv_pw_") and filled.trunk_cut.endswith("_relu")
    (entry,) = ArrayCache(cache).entries()
    with np.load(entry) as stored:
        assert stored["features"].dtype == np.float32 and stored["features"].ndim == 4
    _assert_same_result(live, filled)
    _assert_same_result(live, hit)
    # the kept model takes images and predicts what the trial measured
    np.testing.assert_allclose(hit.model.predict(data.x_val.astype(np.float32), verbose=0)[:, 0],
                               hit.outputs[:, 1], atol=LOSS_TOLERANCE)  # sigmoid: P(second class)


@pytest.mark.slow
def test_random_init_fine_tune_trains_batchnorm_above_the_cut_like_live(image_folder: Path, tmp_path: Path) -> None:
    """weights: none, so BatchNorm above the cut trains in training mode, as in the full model."""
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    live = train_trial(TUNED.replace(feature_cache=False), data, feature_cache_dir=cache)
    cached = train_trial(TUNED, data, feature_cache_dir=cache)
    assert cached.feature_cache == "filled"
    _assert_same_result(live, cached)


def test_over_budget_or_no_cut_trains_live(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    config = TUNED.replace(epochs=1)
    monkeypatch.setenv("MEDSWEEP_CUT_CACHE_MB", "0.001")  # 1 KiB: any cut is over it
    refused = train_trial(config, data, feature_cache_dir=cache)
    assert (refused.feature_cache, refused.trunk_cut) == ("off", None) and not ArrayCache(cache).entries()
    monkeypatch.delenv("MEDSWEEP_CUT_CACHE_MB")
    everything = train_trial(config.replace(fine_tune_fraction=1.0), data, feature_cache_dir=cache)
    assert everything.feature_cache == "off" and not ArrayCache(cache).entries()
    cached = train_trial(config, data, feature_cache_dir=cache)
    deeper = train_trial(config.replace(fine_tune_fraction=0.6), data, feature_cache_dir=cache)
    assert cached.trunk_cut != deeper.trunk_cut  # the cut layer is a key part
    assert len(ArrayCache(cache).entries()) == 2
    np.testing.assert_allclose(cached.history["loss"], refused.history["loss"], atol=LOSS_TOLERANCE)


def test_cut_layer_and_storage_are_key_parts() -> None:
    from medsweep.objectives.training import feature_key

    pooled = feature_key(TUNED, "images", 0)
    at_cut = feature_key(TUNED, "images", 0, "conv_pw_9_relu")
    assert "cut" not in pooled and pooled["pooling"] == "global_average"  # pooled keys unchanged
    assert (at_cut["cut"], at_cut["storage"], at_cut["pooling"]) == ("conv_pw_9_relu", "float32", None)
    assert feature_key(TUNED, "images", 0, "conv_pw_11_relu") != at_cut


def test_reused_compiled_top_starts_every_trial_afresh(image_folder: Path, tmp_path: Path) -> None:
    """Later trials of the same backbone and cut reuse the compiled top model; its weights,
    optimiser state, dropout rate and seed are reset, so a trial run after others (a live one
    among them) reproduces its first run exactly."""
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    config = TUNED.replace(epochs=1)
    first = train_trial(config, data, feature_cache_dir=cache)
    train_trial(config.replace(feature_cache=False), data, feature_cache_dir=cache)
    other = train_trial(config.replace(dropout=0.0, learning_rate=2e-2, batch_size=7), data, feature_cache_dir=cache)
    again = train_trial(config, data, feature_cache_dir=cache)
    assert other.history["loss"] != first.history["loss"]
    assert again.history == first.history
    np.testing.assert_array_equal(again.outputs, first.outputs)


def test_augmented_views_are_cached_at_the_cut(image_folder: Path, tmp_path: Path) -> None:
    """augmented_views > 0: each view's cut output is cached, and each step draws one view."""
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    result = train_trial(TUNED.replace(epochs=1, augmentation=True, augmented_views=2), data, feature_cache_dir=cache)
    assert result.feature_cache == "filled" and result.trunk_cut
    (entry,) = ArrayCache(cache).entries()
    with np.load(entry) as stored:
        features, views = stored["features"], stored["views"]
    assert views.shape == (2, *features.shape) and features.ndim == 4
    assert not np.array_equal(views[0], features)  # the views are augmented copies
    assert np.isfinite(result.history["loss"]).all()
