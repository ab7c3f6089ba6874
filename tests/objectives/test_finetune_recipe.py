"""The fine-tuning recipe: how BatchNorm trains, the backbone's learning rate against the head's,
and the near-black case, where a pretrained fine-tune cannot see its images and must be caught."""

from __future__ import annotations

import numpy as np
import pytest

from medsweep.objectives import ConfigError, TrialConfig
from medsweep.objectives.images import TrialData
from tests.conftest import SHARED_WEIGHTS

REAL_WEIGHTS = (SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5").is_file()
needs_weights = pytest.mark.skipif(not REAL_WEIGHTS, reason="needs ../shared/weights (real MobileNet weights)")


def test_recipe_fields_validate_and_old_configs_load() -> None:
    stored = TrialConfig().to_dict()
    del stored["batchnorm"], stored["backbone_lr_factor"]  # a config stored before these fields
    assert TrialConfig.from_dict(stored) == TrialConfig()
    with pytest.raises(ConfigError, match="batchnorm must be one of frozen, affine, batch.*'train'"):
        TrialConfig(batchnorm="train")
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=f"backbone_lr_factor must be in \\(0, 1\\].*{bad}"):
            TrialConfig(backbone_lr_factor=bad)
    assert TrialConfig(backbone_lr_factor=0.1).replace(batchnorm="affine").to_dict()["backbone_lr_factor"] == 0.1


def _fit_tiny_backbone(batchnorm: str) -> tuple[float, float]:
    """A one-BatchNorm 'backbone' treated as pretrained, called with training=False the way the
    Keras guide writes it, trained two epochs: (moving mean change, scale change)."""
    import keras

    from medsweep.objectives.model import set_trainable_layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    base = set_trainable_layers(keras.Model(inputs, x, name="base"), 1.0, True, batchnorm)
    images = keras.Input((8, 8, 3))
    features = base(images) if batchnorm == "batch" else base(images, training=False)  # as build_model does
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(images, keras.layers.Dense(1)(pooled))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    layer = base.get_layer("bn")
    mean, scale = layer.moving_mean.numpy(), layer.gamma.numpy()
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 8, 8, 3)) * 5 + 3, rng.random((16, 1)), epochs=2, verbose=0)
    return float(np.abs(layer.moving_mean.numpy() - mean).max()), float(np.abs(layer.gamma.numpy() - scale).max())


@pytest.mark.parametrize("batchnorm, statistics_move, scale_trains", [
    ("frozen", False, False),  # inference mode, nothing trains
    ("affine", False, True),  # moving statistics kept, scale and offset train
    ("batch", True, True),  # batch statistics in training, moving statistics follow them
])
def test_batchnorm_modes(batchnorm: str, statistics_move: bool, scale_trains: bool) -> None:
    moved, scaled = _fit_tiny_backbone(batchnorm)
    assert (moved > 1e-4, scaled > 1e-4) == (statistics_move, scale_trains)


def test_keras_training_false_does_not_hold_under_fit() -> None:
    """Why `affine` needs its own layer: in Keras 3, fit's training=True replaces the nested
    backbone's training=False, so a plain trainable BatchNorm re-estimates its statistics."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    base = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    images = keras.Input((8, 8, 3))
    model = keras.Model(images, keras.layers.Dense(1)(keras.layers.Flatten()(base(images, training=False))))
    model.compile("adam", "mse")
    before = base.get_layer("bn").moving_mean.numpy()
    model.fit(np.full((8, 8, 8, 3), 3.0), np.zeros((8, 1)), epochs=1, verbose=0)
    assert np.abs(base.get_layer("bn").moving_mean.numpy() - before).max() > 0.01  # one step: 0.03


def test_backbone_learns_at_its_factor_of_the_head_rate() -> None:
    """Adam's first step moves every weight by about its learning rate: the backbone's by
    learning_rate x backbone_lr_factor, the head's by learning_rate."""
    import keras

    from medsweep.objectives.model import build_model

    config = TrialConfig(backbone="MobileNet", alpha=0.25, weights="none", image_size=32, learning_rate=1e-3,
                         fine_tune_fraction=1.0, backbone_lr_factor=0.1, augmentation=False, batch_size=4)
    keras.utils.set_random_seed(0)
    model = build_model(config, 2)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    conv = backbone.get_layer("conv1")
    before_conv, before_dense = conv.kernel.numpy(), model.get_layer("dense").kernel.numpy()
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 255, (4, 32, 32, 3)).astype("float32"), np.array([[0], [1], [0], [1]], "float32"),
              batch_size=4, epochs=1, verbose=0)
    conv_step = np.abs(conv.kernel.numpy() - before_conv).max()
    dense_step = np.abs(model.get_layer("dense").kernel.numpy() - before_dense).max()
    assert dense_step == pytest.approx(1e-3, rel=0.05)
    assert conv_step == pytest.approx(1e-4, rel=0.05)


def near_black_images(count: int, size: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels 0-2 of 255, like a 16-bit scan exported badly: a level-1 'brain' on black,
    class 1 with a small level-2 'lesion' in it."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    rows, cols = np.mgrid[:size, :size]
    images = np.zeros((count, size, size, 3), np.uint8)
    for index in range(count):
        centre_row, centre_col = size / 2 + rng.normal(0, 2, 2)
        images[index][(rows - centre_row) ** 2 + (cols - centre_col) ** 2 < (size * 0.4) ** 2] = 1
        if labels[index]:
            lesion_row, lesion_col = rng.integers(size // 3, 2 * size // 3, 2)
            images[index][(rows - lesion_row) ** 2 + (cols - lesion_col) ** 2 < 16] = 2
    return images, labels


NEAR_BLACK = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(SHARED_WEIGHTS), image_size=40, epochs=5,
                         batch_size=8, learning_rate=1e-4, augmentation=False, fine_tune_fraction=1.0,
                         batchnorm="frozen")


@needs_weights
def test_near_black_images_barely_move_pretrained_features() -> None:
    """Why: MobileNet's preprocessing maps levels 0-2 to -1 .. -0.984, so every image looks
    almost like a black one to pretrained filters and statistics; the pooled features differ
    between images by a tiny share of their size, which minmax rescaling restores."""
    import keras

    from medsweep.objectives.model import build_backbone, pooled_trunk

    images, _ = near_black_images(16)

    def relative_spread(intensity: str) -> float:
        config = NEAR_BLACK.replace(intensity=intensity)
        inputs = keras.Input((40, 40, 3))
        trunk = keras.Model(inputs, pooled_trunk(inputs, config, build_backbone(config), inference=True))
        features = np.asarray(trunk(images.astype("float32"), training=False))
        return float(features.std(axis=0).mean() / (np.abs(features).mean() + 1e-12))

    raw, rescaled = relative_spread("raw"), relative_spread("minmax")
    assert raw < 0.05 < rescaled and rescaled > 10 * raw, (raw, rescaled)


@needs_weights
@pytest.mark.slow
def test_near_black_fine_tune_is_caught_and_minmax_learns() -> None:
    from medsweep.objectives import train_trial

    x_train, y_train = near_black_images(48, seed=0)
    x_val, y_val = near_black_images(24, seed=1)
    data = TrialData(("no lesion", "lesion"), x_train, y_train, x_val, y_val)
    stuck = train_trial(NEAR_BLACK, data)
    assert stuck.metrics["output_spread"] < 0.005
    assert stuck.warning and "outputs constant" in stuck.warning and "intensity: minmax" in stuck.warning
    learned = train_trial(NEAR_BLACK.replace(intensity="minmax"), data)
    assert learned.warning is None and learned.metrics["auc"] > 0.9, learned.metrics["auc"]


def test_constant_output_warning_names_the_fix() -> None:
    from medsweep.objectives.metrics import constant_output_warning, output_spread

    warning = constant_output_warning(np.full((10, 1), 0.4))
    assert warning.startswith("outputs constant (spread ") and "across 10 validation images" in warning
    assert constant_output_warning(np.linspace(0.45, 0.55, 10)[:, None]) is None  # weak but not constant
    assert output_spread(np.array([[0.2], [0.8]])) == pytest.approx(0.3)
