"""Where a cached trial's trunk output comes from: frozen-backbone features on disk.

A frozen backbone maps each image to the same pooled feature vector in every epoch of every
trial, so those vectors are computed once per (backbone, weights, image size, alpha, intensity,
image content, preprocessing) and kept on disk (`images.ArrayCache`). This module only produces
them; `_train` trains the same head, with the same compile and loop, on them as on images, so a
cached trial reaches the full model's result up to floating-point round-off (tested).

Features are stored per image, addressed by each image's content hash, for the union of the
training and validation images, so cross-validation folds and other splits of the same images
share one entry.

With `augmented_views` > 0, a bounded set of augmented copies of each image (the template's
augmentation, fixed seed) is encoded too and each training step draws one of them per image:
an approximation of on-the-fly augmentation, which stays available with `augmented_views: 0`."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import weakref
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._keras import import_keras
from ..config import TrialConfig, get_backbone, keras_weights_folder, resolve_weights
from ..images import ArrayCache, TrialData, cut_cache_budget, file_sha256
from ..model import POOLED, BackboneCut, TrialPlan, backbone_input, build_backbone, count_draws, pooled_trunk
from ._pipeline import augmentation_block
from ._session import extraction_session, release_session

CACHE_FORMAT = 1
VIEWS_SEED = 0  # augmented views are shared by every trial, whatever its seed
_EXTRACT_BATCH = 32
# Cut-point outputs are stored as float32: with float16 (half the size) a fine-tuned top drifted
# from the live model by 0.02 in loss and 0.16 in outputs after 2 epochs (real MobileNet, 64 px),
# far outside the feature cache's tolerances; float32 reproduces the live run exactly.
CUT_STORAGE = "float32"
_FLOAT16_MAX = float(np.finfo(np.float16).max)

# Every TrialConfig field is in exactly one of these two lists (a test checks it), so a field
# added later is a key part unless someone decides it is head-only, as in `_session._top_key`.
# Fields the key names through the parts derived from them (the backbone's name and
# preprocessing, the resolved size, the weights' identity, the seed only for random weights,
# intensity unless raw, the augmented views and the cut that fine_tune_fraction decides): kept as
# they were, so entries stored before keep their keys.
FEATURE_KEY_FIELDS = ("backbone", "image_size", "weights", "alpha", "seed", "intensity", "augmentation",
                "augmented_views", "fine_tune_fraction")
# Fields that never change what the frozen trunk outputs: the head, the optimiser and the loop
# (BatchNormalization below the cut runs in inference mode whatever `batchnorm` says).
HEAD_ONLY_FIELDS = ("learning_rate", "epochs", "batch_size", "dense_units", "dropout", "feature_cache",
                    "frozen_warmup_epochs", "class_weight", "oversample", "batchnorm", "backbone_lr_factor")

_row_hashes: dict[int, tuple[weakref.ref[Any], np.ndarray]] = {}
_weights_hashes: dict[tuple[str, int, float], str] = {}


def _image_hashes(images: np.ndarray) -> np.ndarray:
    """SHA-1 of each image's decoded bytes (S40); remembered per array while it lives."""
    remembered = _row_hashes.get(id(images))
    if remembered is not None and remembered[0]() is images:
        return remembered[1]
    hashes = np.array([hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in images],
                      dtype="S40")
    try:
        reference = weakref.ref(images, lambda _, key=id(images): _row_hashes.pop(key, None))
        _row_hashes[id(images)] = (reference, hashes)
    except TypeError:  # not weak-referenceable: just do not remember
        pass
    return hashes


def _weights_identity(config: TrialConfig, size: int) -> dict[str, Any]:
    """What the backbone's weights are: none (then the seed decides them), ImageNet (the cached
    file's hash where Keras has it) or a file's SHA-256."""
    backbone = get_backbone(config.backbone)
    if config.weights == "none":
        return {"weights": "none", "seed": config.seed}
    if config.weights == "imagenet":
        file = keras_weights_folder() / backbone.expected_weights_file(size, config.alpha)
        return {"weights": "imagenet", "file": file.name, "sha256": _hash_weights(file) if file.is_file() else None}
    resolved = Path(str(resolve_weights(backbone, config.weights, size, config.alpha)))
    return {"weights": "file", "file": resolved.name, "sha256": _hash_weights(resolved)}


def _hash_weights(path: Path) -> str:
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if memo not in _weights_hashes:
        _weights_hashes[memo] = file_sha256(path)
    return _weights_hashes[memo]


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("keras", "tensorflow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _unlisted_fields(config: TrialConfig) -> dict[str, Any]:
    """Config fields in neither list (added after them), as key parts; named only when not at
    their default, so entries stored before the field existed keep their keys."""
    listed = set(FEATURE_KEY_FIELDS) | set(HEAD_ONLY_FIELDS)
    return {f"config.{field.name}": getattr(config, field.name) for field in dataclasses.fields(config)
            if field.name not in listed and getattr(config, field.name) != field.default}


def feature_key(config: TrialConfig, image_set_hash: str, views: int, cut: str = POOLED) -> dict[str, Any]:
    """Everything a cached feature matrix depends on: every config field but the head-only ones
    (see FEATURE_KEY_FIELDS), the images and views; `cut` names the backbone layer whose output a
    cut-point entry holds (POOLED: pooled features)."""
    backbone = get_backbone(config.backbone)
    size = config.resolved_image_size
    # Named only when not raw, so entries cached before the option existed still match.
    intensity = {} if config.intensity == "raw" else {"intensity": config.intensity}
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone.name,
        "image_size": size,
        "alpha": config.alpha if backbone.has_alpha else None,
        **_weights_identity(config, size),
        "preprocessing": f"keras.applications.{backbone.module}.preprocess_input",
        **intensity,
        "pooling": "global_average" if cut == POOLED else None,
        # Named only for a cut-point entry, so pooled entries keep their earlier keys.
        **({} if cut == POOLED else {"cut": cut, "storage": CUT_STORAGE}),
        "images": image_set_hash,
        "augmented_views": views,
        "views_seed": VIEWS_SEED if views else None,
        "versions": _versions(),
        **_unlisted_fields(config),
    }


def _compute_features(config: TrialConfig, images: np.ndarray, views: int) -> dict[str, np.ndarray]:
    """The trunk's output (up to the POOLED cut) for `images`, and `views` augmented views of
    each; also how many default seeds building the backbone drew (for the head's start)."""
    keras = import_keras()
    size = config.resolved_image_size
    extraction_session(config.seed)
    before = random.getstate()
    base = build_backbone(config)
    draws = count_draws(before, random.getstate())
    base.trainable = False
    inputs = keras.Input(shape=(size, size, 3), name="image")
    extractor = keras.Model(inputs, pooled_trunk(inputs, config, base, inference=True), name="feature_extractor")
    # A chunk at a time, so images on disk (or a large float32 copy) never sit in memory whole.
    features = np.concatenate([
        extractor.predict(images[start:start + 512].astype(np.float32), batch_size=_EXTRACT_BATCH, verbose=0)
        for start in range(0, len(images), 512)])
    arrays = {"features": features.astype(np.float32),
              "draws": np.asarray(draws, dtype=np.int64)}
    if views:
        augmentation = augmentation_block(VIEWS_SEED)
        augmented = []
        for _ in range(views):
            view = np.concatenate([
                np.asarray(augmentation(images[start:start + _EXTRACT_BATCH].astype(np.float32), training=True))
                for start in range(0, len(images), _EXTRACT_BATCH)])
            augmented.append(extractor.predict(view, batch_size=_EXTRACT_BATCH, verbose=0).astype(np.float32))
        arrays["views"] = np.stack(augmented)
    del extractor, base
    release_session()
    return arrays


def _compute_cut_outputs(config: TrialConfig, base: Any, cut: BackboneCut, images: np.ndarray,
                         views: int) -> dict[str, np.ndarray]:
    """The frozen lower backbone's output at `cut` for `images` (and `views` augmented views of
    each), through the same intensity and preprocessing layers as the full model, computed with
    the trial's own backbone (its layers below the cut are frozen)."""
    keras = import_keras()
    size = config.resolved_image_size
    inputs = keras.Input(shape=(size, size, 3), name="image")
    lower = keras.Model(base.input, cut.tensor, name="lower_backbone")
    extractor = keras.Model(inputs, lower(backbone_input(inputs, config), training=False), name="cut_extractor")

    def encode(batch: np.ndarray) -> np.ndarray:
        return extractor.predict(batch, batch_size=_EXTRACT_BATCH, verbose=0)

    def encode_all(transform: Any = None) -> np.ndarray:
        chunks = []
        for start in range(0, len(images), _EXTRACT_BATCH):
            batch = images[start:start + _EXTRACT_BATCH].astype(np.float32)
            chunks.append(encode(np.asarray(transform(batch)) if transform else batch))
        return np.concatenate(chunks)

    features = [encode_all()]
    if views:
        augmentation = augmentation_block(VIEWS_SEED)
        features += [encode_all(lambda batch: augmentation(batch, training=True)) for _ in range(views)]
    peak = max(float(np.max(np.abs(f))) if f.size else 0.0 for f in features)
    dtype = np.float16 if CUT_STORAGE == "float16" and peak < _FLOAT16_MAX else np.float32
    arrays = {"features": features[0].astype(dtype)}
    if views:
        arrays["views"] = np.stack([f.astype(dtype) for f in features[1:]])
    del extractor, lower
    return arrays


def _image_set(data: TrialData) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(every train+validation image's hash, the distinct hashes, where each first occurs,
    the image set's hash)."""
    train_hashes = _image_hashes(data.x_train)
    val_hashes = _image_hashes(data.x_val) if len(data.x_val) else np.zeros(0, dtype="S40")
    all_hashes = np.concatenate([train_hashes, val_hashes])
    unique, first = np.unique(all_hashes, return_index=True)
    return all_hashes, unique, first, hashlib.sha256(b"".join(unique.tolist())).hexdigest()


def cached_features(config: TrialConfig, data: TrialData, cache_dir: str | Path | None = None,
                    views: int = 0, *, base: Any = None, cut: BackboneCut | None = None,
                    ) -> tuple[dict[str, np.ndarray], bool, np.ndarray, np.ndarray]:
    """(entry, computed, train rows, validation rows): the cache entry for `data`'s images and
    where each training and validation image sits in it. With `cut` (and the trial's built
    backbone `base`), the entry holds the lower backbone's output at that cut."""
    all_hashes, unique, first, image_set_hash = _image_set(data)
    key = feature_key(config, image_set_hash, views, POOLED if cut is None else cut.name)

    def compute() -> dict[str, np.ndarray]:
        images = np.concatenate([data.x_train, data.x_val]) if len(data.x_val) else data.x_train
        if cut is None:
            return {"hashes": unique, **_compute_features(config, images[first], views)}
        return {"hashes": unique, **_compute_cut_outputs(config, base, cut, images[first], views)}

    entry, computed = ArrayCache(cache_dir).get_or_compute(key, compute)
    rows = np.searchsorted(entry["hashes"], all_hashes)
    train_count = len(data.x_train)
    return entry, computed, rows[:train_count], rows[train_count:]


def cut_entry_bytes(cut: BackboneCut, images: int, views: int) -> int:
    """The size of a cut-point entry for `images` distinct images (and views), as stored."""
    itemsize = np.dtype(CUT_STORAGE).itemsize
    return int(np.prod(cut.shape)) * itemsize * images * (1 + views)


@dataclass
class TrunkOutputs:
    """A cached trial's inputs: the trunk's output for each training image ((n, features) or
    (n, *cut shape), or with augmented views (n, views, ...)) and validation image, and the
    cache's state."""

    train: np.ndarray
    val: np.ndarray
    computed: bool  # this call computed the entry (cache "filled") rather than found it ("hit")
    backbone_draws: int  # default seeds the backbone drew before the head (-1: unknown)
    cut: str = POOLED  # POOLED, or the backbone layer whose output these are


def cached_trunk_outputs(config: TrialConfig, plan: TrialPlan, data: TrialData,
                         cache_dir: str | Path | None = None, *, base: Any = None,
                         cut: BackboneCut | None = None) -> TrunkOutputs | None:
    """The trunk's output at `plan.cut` for `data`, from the cache (computed on a miss). A
    BACKBONE cut needs the trial's built backbone and its `cut`; it returns None (train live)
    when the entry would exceed the cut-point cache budget ($MEDSWEEP_CUT_CACHE_MB)."""
    if plan.cut != POOLED:
        if cut is None or base is None:
            raise ValueError("a cut-point cache needs the trial's backbone and its cut (model.backbone_cut)")
        distinct = len(_image_set(data)[1])
        if cut_entry_bytes(cut, distinct, plan.views) > cut_cache_budget():
            return None
    entry, computed, train_rows, val_rows = cached_features(config, data, cache_dir, plan.views,
                                                            base=base, cut=cut if plan.cut != POOLED else None)
    if "views" in entry:
        views = entry["views"][:, train_rows]
        train = np.ascontiguousarray(np.moveaxis(views, 0, 1))
    else:
        train = entry["features"][train_rows]
    draws = int(entry["draws"]) if "draws" in entry else -1
    return TrunkOutputs(train, entry["features"][val_rows], computed, draws,
                        POOLED if plan.cut == POOLED else cut.name)
