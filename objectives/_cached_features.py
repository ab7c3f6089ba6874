"""Training only the head on cached frozen-backbone features.

A frozen backbone maps each image to the same pooled feature vector in every epoch of every
trial, so those vectors are computed once per (backbone, weights, image size, alpha, image
content, preprocessing) and kept on disk (`_cache.ArrayCache`). A trial whose backbone is frozen
and whose inputs are not augmented then trains GAP->Dense->Dropout->output on the vectors alone:
the same layers, initial weights, batch order, dropout masks and optimiser as the full model in
`_model.py`, so it reaches the same result up to floating-point round-off (tested).

Features are stored per image, addressed by each image's content hash, for the union of the
training and validation images, so cross-validation folds and other splits of the same images
share one entry.

With `augmented_views` > 0, a bounded set of augmented copies of each image (the template's
augmentation, fixed seed) is encoded too and each training step draws one of them per image:
an approximation of on-the-fly augmentation, which stays available with `augmented_views: 0`."""

from __future__ import annotations

import hashlib
import random
import weakref
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._backbones import get_backbone
from ._cache import ArrayCache, file_sha256
from ._config import TrialConfig
from ._data import TrialData
from ._keras import import_keras
from ._metrics import classification_metrics

CACHE_FORMAT = 1
VIEWS_SEED = 0  # augmented views are shared by every trial, whatever its seed
_EXTRACT_BATCH = 32
_MAX_REPLAYED_DRAWS = 200_000
_HEAD_LAYERS = ("dense", "output")
_STEPS_PER_EXECUTION = 256

_row_hashes: dict[int, tuple[weakref.ref[Any], np.ndarray]] = {}
_weights_hashes: dict[tuple[str, int, float], str] = {}


def cache_applies(config: TrialConfig) -> bool:
    """True when a trial can train on cached features: frozen backbone, cache on, and inputs
    either not augmented or augmented through the bounded pre-computed views."""
    if not config.feature_cache or config.fine_tune_fraction > 0:
        return False
    return not config.augmentation or config.augmented_views > 0


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
    from ._backbones import resolve_weights

    backbone = get_backbone(config.backbone)
    if config.weights == "none":
        return {"weights": "none", "seed": config.seed}
    if config.weights == "imagenet":
        import os

        keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
        file = keras_home / "models" / backbone.expected_weights_file(size, config.alpha)
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


def feature_key(config: TrialConfig, image_set_hash: str, views: int) -> dict[str, Any]:
    """Everything a cached feature matrix depends on."""
    backbone = get_backbone(config.backbone)
    size = config.resolved_image_size
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone.name,
        "image_size": size,
        "alpha": config.alpha if backbone.has_alpha else None,
        **_weights_identity(config, size),
        "preprocessing": f"keras.applications.{backbone.module}.preprocess_input",
        "pooling": "global_average",
        "images": image_set_hash,
        "augmented_views": views,
        "views_seed": VIEWS_SEED if views else None,
        "versions": _versions(),
    }


def _count_draws(before: object, after: object) -> int:
    """How many `keras` default seeds (Python `random.randint`) the backbone's construction
    drew; -1 when something else consumed Python's random stream."""
    random.setstate(before)  # type: ignore[arg-type]
    for draws in range(_MAX_REPLAYED_DRAWS):
        if random.getstate() == after:
            return draws
        random.randint(1, int(1e9))
    random.setstate(after)  # type: ignore[arg-type]
    return -1


def _compute_features(config: TrialConfig, images: np.ndarray, views: int) -> dict[str, np.ndarray]:
    keras = import_keras()
    from ._layers import BackbonePreprocess, augmentation_block
    from ._model import _build_backbone

    from ._runtime import use_float32_policy

    size = config.resolved_image_size
    keras.backend.clear_session()
    use_float32_policy()
    keras.utils.set_random_seed(config.seed)
    before = random.getstate()
    base = _build_backbone(config)
    draws = _count_draws(before, random.getstate())
    base.trainable = False
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = BackbonePreprocess(config.backbone, name="preprocess")(inputs)
    x = base(x, training=False)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    extractor = keras.Model(inputs, outputs, name="feature_extractor")
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
    keras.backend.clear_session()
    return arrays


def cached_features(config: TrialConfig, data: TrialData, cache_dir: str | Path | None = None,
                    ) -> tuple[dict[str, np.ndarray], bool, np.ndarray, np.ndarray]:
    """(entry, computed, train rows, validation rows): the cache entry for `data`'s images and
    where each training and validation image sits in it."""
    train_hashes = _image_hashes(data.x_train)
    val_hashes = _image_hashes(data.x_val) if len(data.x_val) else np.zeros(0, dtype="S40")
    all_hashes = np.concatenate([train_hashes, val_hashes])
    unique, first = np.unique(all_hashes, return_index=True)
    image_set_hash = hashlib.sha256(b"".join(unique.tolist())).hexdigest()
    views = config.augmented_views if config.augmentation else 0
    key = feature_key(config, image_set_hash, views)

    def compute() -> dict[str, np.ndarray]:
        images = np.concatenate([data.x_train, data.x_val]) if len(data.x_val) else data.x_train
        return {"hashes": unique, **_compute_features(config, images[first], views)}

    entry, computed = ArrayCache(cache_dir).get_or_compute(key, compute)
    rows = np.searchsorted(entry["hashes"], all_hashes)
    return entry, computed, rows[:len(train_hashes)], rows[len(train_hashes):]


def _targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    if num_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(num_classes, dtype=np.float32)[labels]


def _head_layers(config: TrialConfig, feature_size: int, num_classes: int, dropout: Any) -> Any:
    """GAP's output -> Dense -> Dropout -> output, the layers of `_model.build_model`'s head in
    the same order (so the same initial weights are drawn)."""
    keras = import_keras()
    inputs = keras.Input(shape=(feature_size,), name="features")
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(inputs)
    x = dropout(x)
    if num_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="output", dtype="float32")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="medsweep_head")


def _compile_head(model: Any, config: TrialConfig, num_classes: int) -> None:
    """Compiled as `_model.build_model` compiles, with many steps per call: the same updates in
    the same order (callbacks act per epoch), without Python dispatch for each tiny step."""
    keras = import_keras()
    if num_classes == 2:
        loss: Any = keras.losses.BinaryCrossentropy()
        metrics: list[Any] = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.AUC(name="auc", multi_label=True, num_labels=num_classes)]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss,
                  metrics=metrics, steps_per_execution=_STEPS_PER_EXECUTION)


def _variable_rate_dropout(seed: int) -> Any:
    """Keras' Dropout with its rate in a variable, so one compiled head serves every dropout
    rate. Same arithmetic: `stateless_dropout` with the layer's seed generator (rate 0 keeps
    every unit, as Keras' shortcut does)."""
    keras = import_keras()
    import tensorflow as tf
    from keras.src.backend.tensorflow.random import _cast_seed, draw_seed

    class VariableRateDropout(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)
            self.rate = self.add_weight(shape=(), initializer="zeros", trainable=False, name="rate")

        def call(self, inputs: Any, training: bool = False) -> Any:
            if not training:
                return inputs
            return tf.nn.experimental.stateless_dropout(inputs, rate=tf.convert_to_tensor(self.rate),
                                                        seed=_cast_seed(draw_seed(self.seed_generator)))

    return VariableRateDropout(name="dropout")


# Compiled heads kept per (feature size, units, classes): tracing a head's training step costs
# more than training it, so later trials reset the weights, optimiser and dropout instead.
_COMPILED_HEADS: "OrderedDict[tuple[int, int, int], Any]" = OrderedDict()
_MAX_COMPILED_HEADS = 4


def _trial_head(config: TrialConfig, feature_size: int, num_classes: int,
                initial: dict[str, list[np.ndarray]]) -> Any:
    """A compiled head set to this trial's starting point: `initial` weights, fresh Adam state
    at the trial's learning rate, the trial's dropout rate and seed."""
    key = (feature_size, config.dense_units, num_classes)
    model = _COMPILED_HEADS.pop(key, None)
    if model is None:
        model = _head_layers(config, feature_size, num_classes, _variable_rate_dropout(config.seed))
        _compile_head(model, config, num_classes)
    _COMPILED_HEADS[key] = model
    while len(_COMPILED_HEADS) > _MAX_COMPILED_HEADS:
        _COMPILED_HEADS.popitem(last=False)
    set_head_weights(model, initial)
    dropout = model.get_layer("dropout")
    dropout.rate.assign(config.dropout)
    dropout.seed_generator.state.assign(np.asarray([config.seed, 0], dtype=dropout.seed_generator.state.dtype))
    optimizer = model.optimizer
    for variable in optimizer.variables:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    optimizer.learning_rate = config.learning_rate
    return model


def head_weights(model: Any) -> dict[str, list[np.ndarray]]:
    return {name: [np.array(w) for w in model.get_layer(name).get_weights()] for name in _HEAD_LAYERS}


def set_head_weights(model: Any, weights: dict[str, list[np.ndarray]]) -> None:
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)


def _feature_dataset(features: np.ndarray, targets: np.ndarray, batch_size: int, *, shuffle: bool,
                     seed: int) -> Any:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    if features.ndim == 3:  # (images, views, features): one random view per image and step
        views = features.shape[1]
        dataset = dataset.map(
            lambda f, y: (f[tf.random.uniform((), 0, views, dtype=tf.int32, seed=seed)], y))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_metrics(labels: np.ndarray, outputs: np.ndarray, num_classes: int) -> dict[str, float | None]:
    """`classification_metrics`' loss, accuracy, balanced accuracy and (macro one-vs-rest) ROC
    AUC in plain NumPy: the same values without scikit-learn's input checks, which cost more
    than a cached head's whole epoch."""
    from ._metrics import class_probabilities

    y_true = np.asarray(labels, dtype=np.int64)
    probabilities = np.clip(class_probabilities(outputs), 1e-7, 1 - 1e-7)
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(y_true)
    recalls = [float(np.mean(predicted[y_true == label] == label)) for label in present]
    result: dict[str, float | None] = {
        "loss": float(-np.mean(np.log(normalised[np.arange(len(y_true)), y_true]))),
        "accuracy": float(np.mean(predicted == y_true)),
        "balanced_accuracy": float(np.mean(recalls)) if len(present) > 1 else None,
        "auc": None,
    }
    if len(present) == num_classes:
        columns = [1] if num_classes == 2 else range(num_classes)
        result["auc"] = float(np.mean([_binary_auc(y_true == c, probabilities[:, c]) for c in columns]))
    return result


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with average ranks for ties (what the ROC curve's
    trapezoids give)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def _fast_exact_validation(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Any:
    """`_layers.ExactValidation` for a head on cached features: one batched forward pass and
    NumPy metrics per epoch, writing the same `val_*` logs before the callbacks after it."""
    keras = import_keras()

    class FastExactValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            outputs = np.asarray(self.model(features, training=False))
            for name, value in epoch_metrics(labels, outputs, num_classes).items():
                if value is not None:
                    logs[f"val_{name}"] = value

    return FastExactValidation()


def train_head_on_features(config: TrialConfig, data: TrialData, callbacks: Sequence[Any] = (),
                           *, verbose: int = 0, cache_dir: str | Path | None = None,
                           ) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, list[np.ndarray]],
                                      bool, np.ndarray | None]:
    """Train the head on cached features: (history, validation metrics, head weights, computed,
    validation outputs)."""
    keras = import_keras()
    from ._layers import EpochHistory
    from ._model import build_model
    from ._runtime import use_float32_policy

    entry, computed, train_rows, val_rows = cached_features(config, data, cache_dir)
    use_float32_policy()
    if "views" in entry:
        train_features = np.ascontiguousarray(entry["views"][:, train_rows].transpose(1, 0, 2))
    else:
        train_features = entry["features"][train_rows]
    val_features = entry["features"][val_rows]
    draws = int(entry["draws"])

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(config.seed)
    if draws < 0:  # the draw count is unknown: take the head's initial weights from a full model
        initial = head_weights(build_model(config, data.num_classes))
    else:
        for _ in range(draws):  # the draws the backbone would have made before the head
            random.randint(1, int(1e9))
        dropout = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")
        initial = head_weights(_head_layers(config, train_features.shape[-1], data.num_classes, dropout))
    model = _trial_head(config, train_features.shape[-1], data.num_classes, initial)

    recorder = next((c for c in callbacks if isinstance(c, EpochHistory)), None)
    all_callbacks = list(callbacks)
    if recorder is None:
        recorder = EpochHistory()
        all_callbacks.insert(0, recorder)
    y_train, class_weight = data.y_train, None
    if getattr(config, "class_weight", "none") != "none" or getattr(config, "oversample", False):
        from ._balance import balance_training_data  # the same rows and weights the full model gets

        train_features, y_train, class_weight = balance_training_data(
            train_features, data.y_train, data.num_classes, class_weight=config.class_weight,
            oversample=config.oversample, seed=config.seed)
    train = _feature_dataset(train_features, _targets(y_train, data.num_classes), config.batch_size,
                             shuffle=True, seed=config.seed)
    validation = None
    if len(val_rows):
        validation = val_features
        all_callbacks.insert(0, _fast_exact_validation(val_features, data.y_val, data.num_classes))
    model.fit(train, epochs=config.epochs, callbacks=all_callbacks,
              verbose=verbose, shuffle=False, class_weight=class_weight)
    metrics: dict[str, Any] = {}
    outputs = None
    if validation is not None:
        outputs = model.predict(val_features, batch_size=max(config.batch_size, 256), verbose=0)
        metrics = classification_metrics(data.y_val, outputs, data.class_names)
    weights = head_weights(model)
    return recorder.history, metrics, weights, computed, outputs


def train_on_cached_features(config: TrialConfig, data: TrialData, callbacks: Sequence[Any] = (),
                             *, verbose: int = 0, keep_model: bool = False,
                             cache_dir: str | Path | None = None) -> Any:
    """`train_trial` for a frozen trial: the head on cached features; with `keep_model`, the
    trained head is put on a full model that takes images."""
    from ._metrics import class_probabilities
    from ._train import TrialResult

    history, metrics, weights, computed, outputs = train_head_on_features(
        config, data, callbacks, verbose=verbose, cache_dir=cache_dir)
    model = None
    if keep_model:
        from ._model import build_model

        keras = import_keras()
        keras.backend.clear_session()
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, data.num_classes)
        set_head_weights(model, weights)
    result = TrialResult(config, history, metrics, model, feature_cache="filled" if computed else "hit")
    result.outputs = None if outputs is None else class_probabilities(outputs)
    return result


def warm_up_head(config: TrialConfig, data: TrialData, cache_dir: str | Path | None = None,
                 ) -> dict[str, list[np.ndarray]]:
    """The two-stage recipe's first stage: `frozen_warmup_epochs` of head-only training (on
    cached features where the cache applies), whose head weights start the fine-tuning."""
    warm = config.replace(fine_tune_fraction=0.0, epochs=config.frozen_warmup_epochs, frozen_warmup_epochs=0)
    if cache_applies(warm):
        return train_head_on_features(warm, data, cache_dir=cache_dir)[2]
    from ._train import train_trial

    result = train_trial(warm, data, keep_model=True)
    weights = head_weights(result.model)
    import_keras().backend.clear_session()
    return weights
