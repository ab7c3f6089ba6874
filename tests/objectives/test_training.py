"""Real Keras training on tiny images (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import BackboneError, TrialConfig, train_trial
from medsweep.objectives.evaluation import predict_files
from medsweep.objectives.images import DataSpec, ImageDataset
from medsweep.objectives.model import read_model_metadata, save_model

from ..conftest import SHARED_DATA, SHARED_WEIGHTS

TINY = TrialConfig(backbone="VGG19", image_size=32, weights="none", epochs=2, batch_size=8,
                   augmentation=False, learning_rate=1e-3)


def test_trains_records_history_and_metrics(image_folder: Path) -> None:
    data = ImageDataset.open(DataSpec(str(image_folder), validation_fraction=0.25)).arrays(32)
    result = train_trial(TINY, data)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "auc", "val_auc"):
        assert len(result.history[key]) == 2, key
    metrics = result.metrics
    assert metrics["n"] == 6 and 0 <= metrics["auc"] <= 1
    assert {"sensitivity", "specificity", "f1", "balanced_accuracy", "confusion_matrix"} <= set(metrics)
    assert sum(map(sum, metrics["confusion_matrix"])) == 6


def test_augmented_three_class_model_saves_and_predicts(three_class_folder: Path, tmp_path: Path) -> None:
    dataset = ImageDataset.open(DataSpec(str(three_class_folder), validation_fraction=0.3))
    config = TINY.replace(augmentation=True, epochs=1)
    result = train_trial(config, dataset.arrays(32), keep_model=True)
    assert result.model.output_shape == (None, 3)
    assert "sensitivity[class b]" in result.metrics
    path = save_model(result.model, tmp_path / "model.keras", {"class_names": list(dataset.class_names)})
    assert read_model_metadata(path)["class_names"] == ["class a", "class b", "class c"]
    rows = predict_files(path, [str(p) for p in dataset.train_files.paths[:2]])
    assert len(rows) == 2
    for row in rows:
        assert row["class"] in dataset.class_names
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert row["probability"] == max(row["probabilities"].values())


def test_fine_tuning_unfreezes_top_layers_only() -> None:
    from medsweep.objectives.model import build_model

    model = build_model(TrialConfig(backbone="MobileNet", alpha=0.25, image_size=32, weights="none",
                                    fine_tune_fraction=0.25), 2)
    base = next(layer for layer in model.layers if layer.name.startswith("mobilenet"))
    flags = [layer.trainable for layer in base.layers]
    assert not any(flags[: len(flags) // 2]) and any(flags[-len(flags) // 4:])
    frozen = build_model(TrialConfig(backbone="MobileNet", alpha=0.25, image_size=32, weights="none"), 2)
    assert sum(np.prod(w.shape) for w in frozen.trainable_weights) < sum(np.prod(w.shape) for w in model.trainable_weights)


def test_missing_weights_file_names_the_expected_file(tmp_path: Path) -> None:
    from medsweep.objectives.model import build_model

    config = TrialConfig(backbone="MobileNet", alpha=0.25, image_size=64, weights=str(tmp_path))
    with pytest.raises(BackboneError, match="mobilenet_2_5_224_tf_no_top.h5"):
        build_model(config, 2)


def test_wrong_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    from medsweep.objectives.model import build_model

    bogus = tmp_path / "weights.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(BackboneError, match="does not fit MobileNet"):
        build_model(TrialConfig(backbone="MobileNet", alpha=0.25, image_size=64, weights=str(bogus)), 2)


@pytest.mark.skipif(not (SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5").is_file(),
                    reason="../shared/weights is absent (real MobileNet ImageNet weights)")
def test_real_mobilenet_weights_load_from_a_folder() -> None:
    from medsweep.objectives.model import build_model

    model = build_model(TrialConfig(backbone="MobileNet", alpha=0.25, image_size=96, weights=str(SHARED_WEIGHTS)), 2)
    base = next(layer for layer in model.layers if layer.name.startswith("mobilenet"))
    first_kernel = base.get_layer("conv1").get_weights()[0]
    # Random Glorot kernels are zero-mean with a narrow spread; the pretrained ones are not.
    assert np.abs(first_kernel).max() > 0.5


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "open_i_abd_vs_cxr").is_dir() or not SHARED_WEIGHTS.is_dir(),
                    reason="../shared/data/open_i_abd_vs_cxr or ../shared/weights is absent")
def test_transfer_learning_beats_random_weights_on_open_i() -> None:
    root = SHARED_DATA / "open_i_abd_vs_cxr"
    data = ImageDataset.open(DataSpec(str(root / "TRAIN"), str(root / "VAL"))).arrays(128)
    config = TrialConfig(backbone="MobileNet", alpha=0.25, image_size=128, weights=str(SHARED_WEIGHTS),
                         epochs=4, batch_size=8, learning_rate=1e-3, augmentation=False)
    pretrained = train_trial(config, data).metrics["auc"]
    scratch = train_trial(config.replace(weights="none"), data).metrics["auc"]
    assert pretrained > scratch, (pretrained, scratch)
    assert pretrained >= 0.8


def test_a_model_saved_before_the_medsweep_namespace_still_loads(image_folder: Path, tmp_path: Path) -> None:
    """Models saved when the code imported as `objectives._layers` name that module in their
    config; Keras finds medsweep's layers by their registered names, so they load unchanged."""
    import zipfile

    from medsweep.objectives.model import load_model

    dataset = ImageDataset.open(DataSpec(str(image_folder), validation_fraction=0.3))
    result = train_trial(TINY.replace(epochs=1), dataset.arrays(32), keep_model=True)
    new = save_model(result.model, tmp_path / "new.keras", {"class_names": list(dataset.class_names)})
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(new) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                assert b"medsweep.objectives.model._layers" in data  # the layers' module, as Keras records it
                data = data.replace(b"medsweep.objectives.model._layers", b"objectives._layers")
            target.writestr(item, data)
    images = dataset.arrays(32).x_val[:4].astype("float32")
    model, metadata = load_model(old)
    assert metadata["class_names"] == list(dataset.class_names)
    np.testing.assert_allclose(model.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-6)
