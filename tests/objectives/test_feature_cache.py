"""The feature cache: a head trained on cached frozen-backbone features reaches the full model's
result; the cache survives two processes filling it at once; any changed key part misses."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medsweep.objectives import ConfigError, TrialConfig, train_trial
from medsweep.objectives.images import ArrayCache, DataSpec, ImageDataset
from tests.conftest import SHARED_WEIGHTS

# Same data, seed and config: per-epoch losses within LOSS_TOLERANCE, final AUC within AUC_TOLERANCE.
# (The only difference is floating-point round-off: features are computed in batches of 32 once,
# the full model recomputes them in training batches.)
LOSS_TOLERANCE = 1e-3
AUC_TOLERANCE = 0.02

FROZEN = TrialConfig(backbone="VGG19", weights="none", image_size=32, augmentation=False, epochs=3,
                     batch_size=4, learning_rate=1e-3, dense_units=16, dropout=0.3, seed=3)


def _arrays(folder: Path, size: int = 32) -> Any:
    return ImageDataset.open(DataSpec(str(folder))).arrays(size)


def _assert_same_result(full: Any, cached: Any) -> None:
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(full.history[key]) == len(cached.history[key])
        np.testing.assert_allclose(cached.history[key], full.history[key], atol=LOSS_TOLERANCE, err_msg=key)
    assert abs(cached.metrics["auc"] - full.metrics["auc"]) <= AUC_TOLERANCE
    assert abs(cached.metrics["loss"] - full.metrics["loss"]) <= LOSS_TOLERANCE
    np.testing.assert_allclose(cached.outputs, full.outputs, atol=LOSS_TOLERANCE)


@pytest.mark.slow
def test_head_on_cached_features_matches_full_model(image_folder: Path, tmp_path: Path) -> None:
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    full = train_trial(FROZEN.replace(feature_cache=False), data, feature_cache_dir=cache)
    assert full.feature_cache == "off" and not ArrayCache(cache).entries()
    filled = train_trial(FROZEN, data, feature_cache_dir=cache)
    hit = train_trial(FROZEN, data, feature_cache_dir=cache)
    assert (filled.feature_cache, hit.feature_cache) == ("filled", "hit")
    assert len(ArrayCache(cache).entries()) == 1
    _assert_same_result(full, filled)
    _assert_same_result(full, hit)


@pytest.mark.skipif(not (SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5").is_file(),
                    reason="needs ../shared/weights/mobilenet_2_5_224_tf_no_top.h5 (real MobileNet weights)")
def test_pretrained_three_class_head_matches_full_model(three_class_folder: Path, tmp_path: Path) -> None:
    config = FROZEN.replace(backbone="MobileNet", alpha=0.25, weights=str(SHARED_WEIGHTS), epochs=2, seed=1)
    data = _arrays(three_class_folder)
    full = train_trial(config.replace(feature_cache=False), data)
    cached = train_trial(config, data, feature_cache_dir=tmp_path / "cache")
    assert cached.feature_cache == "filled"
    _assert_same_result(full, cached)
    # keep_model puts the trained head on a full model that takes images and predicts the same
    kept = train_trial(config, data, feature_cache_dir=tmp_path / "cache", keep_model=True)
    assert kept.feature_cache == "hit"
    np.testing.assert_allclose(kept.model.predict(data.x_val.astype(np.float32), verbose=0)[:, :],
                               cached.outputs, atol=LOSS_TOLERANCE)


@pytest.mark.slow
def test_changed_images_size_or_seed_miss_and_damaged_entries_are_recomputed(image_folder: Path,
                                                                             tmp_path: Path) -> None:
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    short = FROZEN.replace(epochs=1)
    assert train_trial(short, data, feature_cache_dir=cache).feature_cache == "filled"
    (entry,) = ArrayCache(cache).entries()
    entry.write_bytes(entry.read_bytes()[:100])  # a damaged file is a miss, then rewritten
    assert train_trial(short, data, feature_cache_dir=cache).feature_cache == "filled"
    assert train_trial(short.replace(learning_rate=1e-2, dense_units=8), data,
                       feature_cache_dir=cache).feature_cache == "hit"  # head settings are not key parts
    changed = np.array(data.x_train)
    changed[0, 0, 0, 0] ^= 1  # one pixel of one image
    altered = type(data)(data.class_names, changed, data.y_train, data.x_val, data.y_val)
    assert train_trial(short, altered, feature_cache_dir=cache).feature_cache == "filled"
    assert train_trial(short.replace(seed=4), data, feature_cache_dir=cache).feature_cache == "filled"
    assert train_trial(short.replace(image_size=40), _arrays(image_folder, 40),
                       feature_cache_dir=cache).feature_cache == "filled"
    assert len(ArrayCache(cache).entries()) == 4


def test_reused_compiled_head_starts_every_trial_afresh(image_folder: Path, tmp_path: Path) -> None:
    """Later trials reuse the compiled head; weights, optimiser state, dropout rate and seed are
    reset, so a trial run after a different one reproduces its first run exactly."""
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    config = FROZEN.replace(epochs=2)
    first = train_trial(config, data, feature_cache_dir=cache)
    other = train_trial(config.replace(dropout=0.0, learning_rate=2e-2, seed=5, batch_size=7), data,
                        feature_cache_dir=cache)
    again = train_trial(config, data, feature_cache_dir=cache)
    assert other.history["loss"] != first.history["loss"]
    assert again.history == first.history
    np.testing.assert_array_equal(again.outputs, first.outputs)


def test_key_follows_weights_file_content_alpha_and_backbone(tmp_path: Path) -> None:
    from medsweep.objectives.training import feature_key

    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 100)
    base = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(weights), image_size=64)
    before = feature_key(base, "images", 0)
    assert feature_key(base, "images", 0) == before
    os.utime(weights, (time.time() + 5, time.time() + 5))
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"1" * 100)
    assert feature_key(base, "images", 0)["sha256"] != before["sha256"]
    others = [feature_key(base.replace(alpha=0.5), "images", 0), feature_key(base.replace(image_size=96), "images", 0),
              feature_key(base, "other images", 0), feature_key(base, "images", 4),
              feature_key(base.replace(backbone="VGG19", alpha=1.0, weights="none"), "images", 0)]
    cache = ArrayCache(tmp_path)
    paths = {cache.path_for(k) for k in others + [before, feature_key(base, "images", 0)]}
    assert len(paths) == len(others) + 2
    # a random backbone's features depend on the seed; pretrained ones do not
    assert feature_key(base.replace(seed=1), "images", 0) == feature_key(base, "images", 0)
    random_init = base.replace(weights="none")
    assert feature_key(random_init.replace(seed=1), "images", 0) != feature_key(random_init, "images", 0)


def _fill(folder: str, marker_dir: str, result_file: str) -> None:
    def compute() -> dict[str, np.ndarray]:
        Path(marker_dir, f"computed-{os.getpid()}").touch()
        time.sleep(1.0)  # a slow backbone: the other process arrives while this one computes
        return {"features": np.arange(200_000, dtype=np.float32).reshape(1000, 200)}

    arrays, _ = ArrayCache(folder).get_or_compute({"entry": "shared"}, compute)
    np.save(result_file, arrays["features"])


def _hammer_reads(folder: str, stop_file: str, report: str) -> None:
    cache, seen = ArrayCache(folder), {"none": 0, "whole": 0, "bad": 0}
    while not Path(stop_file).exists():
        found = cache.load({"entry": "rewritten"})
        if found is None:
            seen["none"] += 1
        elif found["features"].shape == (1000, 200) and float(found["features"][-1, -1]) == 199_999.0:
            seen["whole"] += 1
        else:
            seen["bad"] += 1
    Path(report).write_text(repr(seen))


def test_two_processes_filling_one_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    folder = tmp_path / "cache"
    workers = [context.Process(target=_fill, args=(str(folder), str(tmp_path), str(tmp_path / f"r{i}.npy")))
               for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(list(tmp_path.glob("computed-*"))) == 1  # the second waited and read the first's entry
    np.testing.assert_array_equal(np.load(tmp_path / "r0.npy"), np.load(tmp_path / "r1.npy"))
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".lock")] == [ArrayCache(folder).path_for(
        {"entry": "shared"}).name]  # no temporary files left behind


def _train_in_process(folder: str, cache: str, report: str) -> None:
    import json

    result = train_trial(FROZEN.replace(epochs=1), _arrays(Path(folder)), feature_cache_dir=cache)
    Path(report).write_text(json.dumps({"cache": result.feature_cache, "history": result.history}))


@pytest.mark.slow
def test_two_workers_training_at_once_compute_the_features_once(image_folder: Path, tmp_path: Path) -> None:
    import json

    context = multiprocessing.get_context("spawn")
    reports = [tmp_path / f"worker{i}.json" for i in range(2)]
    workers = [context.Process(target=_train_in_process, args=(str(image_folder), str(tmp_path / "cache"), str(r)))
               for r in reports]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
        assert worker.exitcode == 0
    first, second = (json.loads(r.read_text()) for r in reports)
    assert sorted([first["cache"], second["cache"]]) == ["filled", "hit"]
    assert first["history"] == second["history"]
    assert len(ArrayCache(tmp_path / "cache").entries()) == 1


def test_readers_never_see_a_half_written_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    folder, stop, report = tmp_path / "cache", tmp_path / "stop", tmp_path / "report"
    reader = context.Process(target=_hammer_reads, args=(str(folder), str(stop), str(report)))
    reader.start()
    cache = ArrayCache(folder)
    features = np.arange(200_000, dtype=np.float32).reshape(1000, 200)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        cache.store({"entry": "rewritten"}, {"features": features})
    stop.touch()
    reader.join(30)
    seen = eval(report.read_text())
    assert seen["bad"] == 0 and seen["whole"] > 0


def test_augmented_views_are_cached_and_exact_augmentation_is_not(image_folder: Path, tmp_path: Path) -> None:
    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    exact = train_trial(FROZEN.replace(augmentation=True, epochs=1), data, feature_cache_dir=cache)
    assert exact.feature_cache == "off"
    viewed = train_trial(FROZEN.replace(augmentation=True, augmented_views=3, epochs=2), data,
                         feature_cache_dir=cache)
    assert viewed.feature_cache == "filled" and len(viewed.history["loss"]) == 2
    (entry,) = ArrayCache(cache).entries()
    with np.load(entry) as stored:
        assert stored["views"].shape[:2] == (3, len(data.x_train) + len(data.x_val))
        assert not np.allclose(stored["views"][0], stored["views"][1])


@pytest.mark.slow
def test_two_stage_fine_tuning_starts_from_the_cached_head(image_folder: Path, tmp_path: Path) -> None:
    import keras

    class FirstWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.dense = [np.array(w) for w in self.model.get_layer("dense").get_weights()]

    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    stage_one = train_trial(FROZEN.replace(epochs=2), data, feature_cache_dir=cache, keep_model=True)
    expected = [np.array(w) for w in stage_one.model.get_layer("dense").get_weights()]
    probe = FirstWeights()
    two_stage = FROZEN.replace(fine_tune_fraction=0.2, frozen_warmup_epochs=2, epochs=1)
    result = train_trial(two_stage, data, [probe], feature_cache_dir=cache)
    assert result.feature_cache == "filled" and len(result.history["loss"]) == 1  # cut-cached fine-tune
    for got, want in zip(probe.dense, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    cold = FirstWeights()
    train_trial(two_stage.replace(frozen_warmup_epochs=0), data, [cold], feature_cache_dir=cache)
    assert not np.allclose(cold.dense[0], expected[0])


@pytest.mark.parametrize("classes, labels", [(2, [0, 1, 1, 0, 1, 0, 0, 1, 1, 1]), (3, [0, 1, 2, 2, 1, 0, 2, 1, 0, 1]),
                                             (3, [0, 1, 1, 0, 1, 0, 0, 1, 1, 0])])
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_per_epoch_validation_metrics_equal_scikit_learn(classes: int, labels: list[int]) -> None:
    from medsweep.objectives.metrics import classification_metrics
    from medsweep.objectives.metrics import epoch_metrics

    rng = np.random.default_rng(classes)
    outputs = rng.random((len(labels), 1 if classes == 2 else classes))
    outputs[3] = outputs[4]  # tied scores
    if classes > 2:
        outputs = outputs / outputs.sum(axis=1, keepdims=True)
    fast = epoch_metrics(np.asarray(labels), outputs, classes)
    exact = classification_metrics(labels, outputs, [f"c{i}" for i in range(classes)])
    for name in ("loss", "accuracy", "balanced_accuracy", "auc"):
        if exact[name] is None:
            assert fast[name] is None, name
        else:
            assert fast[name] == pytest.approx(exact[name], abs=1e-12), name


@pytest.mark.parametrize("field, value", [("augmented_views", -1), ("augmented_views", 65),
                                          ("frozen_warmup_epochs", -2), ("feature_cache", "yes")])
def test_new_fields_are_validated_with_their_name(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        TrialConfig.from_dict({field: value})


def test_worker_options_mixed_precision_is_off_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medsweep.objectives.training import set_worker_options
    from medsweep.objectives.training import apply_precision_policy, gpu_available, jit_compile_setting

    for name in ("MEDSWEEP_CACHE_DIR", "MEDSWEEP_MIXED_PRECISION", "MEDSWEEP_XLA"):
        monkeypatch.delenv(name, raising=False)
    set_worker_options(cache_dir=tmp_path / "c", mixed_precision=True, xla="off")
    assert os.environ["MEDSWEEP_CACHE_DIR"] == str((tmp_path / "c").resolve())
    assert jit_compile_setting() is False
    assert apply_precision_policy() == ("mixed_float16" if gpu_available() else "float32")
    set_worker_options(mixed_precision=False)
    assert apply_precision_policy() == "float32" and jit_compile_setting() is None
    with pytest.raises(ConfigError, match="xla"):
        set_worker_options(xla="sometimes")


def _rewrite_entry(entry: Path, keep_checksum: bool = True) -> None:
    """Rewrite a stored entry in place: same key, same shapes, random features (the checksum
    entry copied unchanged, or left out as in an entry written before checksums)."""
    with np.load(entry) as stored:
        arrays = {name: stored[name] for name in stored.files}
    rng = np.random.default_rng(7)
    arrays["features"] = rng.normal(size=arrays["features"].shape).astype(arrays["features"].dtype)
    if not keep_checksum:
        arrays.pop("__medsweep_sha256__")
    with open(entry, "wb") as handle:
        np.savez(handle, **arrays)


def test_a_rewritten_entry_is_caught_by_its_checksum_and_recomputed(image_folder: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: random features written under the same key gave a COMPLETE trial with val_auc 0."""
    import logging

    data = _arrays(image_folder)
    cache = tmp_path / "cache"
    config = FROZEN.replace(epochs=2)
    first = train_trial(config, data, feature_cache_dir=cache)
    (entry,) = ArrayCache(cache).entries()
    for keep_checksum, reason in ((True, "does not match its checksum"), (False, "has no checksum")):
        _rewrite_entry(entry, keep_checksum)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medsweep.cache"):
            again = train_trial(config, data, feature_cache_dir=cache)
        assert again.feature_cache == "filled", reason
        assert caplog.text.count(f"feature cache entry {entry} {reason}") == 1, caplog.text
        assert again.history == first.history
        np.testing.assert_array_equal(again.outputs, first.outputs)
    assert train_trial(config, data, feature_cache_dir=cache).feature_cache == "hit"


def test_every_config_field_is_a_feature_key_part_or_head_only() -> None:
    """Fails when a TrialConfig field is added without deciding whether it changes the trunk's output."""
    from medsweep.objectives.config import CONFIG_FIELDS
    from medsweep.objectives.training import FEATURE_KEY_FIELDS, HEAD_ONLY_FIELDS

    assert not set(FEATURE_KEY_FIELDS) & set(HEAD_ONLY_FIELDS)
    unlisted = set(CONFIG_FIELDS) - set(FEATURE_KEY_FIELDS) - set(HEAD_ONLY_FIELDS)
    assert not unlisted, f"add {sorted(unlisted)} to FEATURE_KEY_FIELDS or HEAD_ONLY_FIELDS in _feature_cache.py"
    assert set(FEATURE_KEY_FIELDS) | set(HEAD_ONLY_FIELDS) == set(CONFIG_FIELDS)


def test_a_field_in_neither_list_is_a_key_part_and_old_keys_stay_valid() -> None:
    import dataclasses

    from medsweep.objectives.training import feature_key

    # The key of every stored entry so far: the same parts as before the key was derived from the fields.
    assert set(feature_key(FROZEN, "images", 0)) == {"format", "backbone", "image_size", "alpha", "weights", "seed",
                                                      "preprocessing", "pooling", "images", "augmented_views",
                                                      "views_seed", "versions"}
    for head_only in ({"learning_rate": 0.01}, {"dropout": 0.1}, {"batchnorm": "affine"}, {"dense_units": 8}):
        assert feature_key(FROZEN.replace(**head_only), "images", 0) == feature_key(FROZEN, "images", 0)

    @dataclasses.dataclass(frozen=True)
    class FutureConfig(TrialConfig):
        stem_stride: int = 2  # a field a later version might add, changing what the backbone outputs

    base = FutureConfig(**FROZEN.to_dict())
    assert feature_key(base, "images", 0) == feature_key(FROZEN, "images", 0)  # at its default: same entry
    changed = feature_key(dataclasses.replace(base, stem_stride=1), "images", 0)
    assert changed["config.stem_stride"] == 1 and changed != feature_key(base, "images", 0)
