"""One training run: fit a TrialConfig on decoded arrays with the callbacks the caller passes,
then measure the validation set. Also saving a model with its class names, and predicting."""

from __future__ import annotations

import gc
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._config import TrialConfig
from ._data import TrialData, decode_image
from ._errors import DataError
from ._keras import import_keras
from ._metrics import class_probabilities, classification_metrics

_METADATA_ENTRY = "medsweep.json"


@dataclass
class TrialResult:
    """What a run produced: per-epoch history, final validation metrics and the model."""

    config: TrialConfig
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)
    outputs: Any = field(default=None, repr=False)  # validation class probabilities, (n, classes)
    feature_cache: str = "off"  # off | filled | hit: whether the head trained on cached features


def _targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    if num_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(num_classes, dtype=np.float32)[labels]


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 *, shuffle: bool, seed: int, augment: bool = False) -> Any:
    """A tf.data pipeline over in-memory uint8 images: shuffle, batch, cast (and augment) in
    parallel, prefetch. Augmentation lives here rather than in the model, so it runs beside
    training and a saved model holds only what prediction needs."""
    import_keras()
    import tensorflow as tf

    targets = _targets(labels, num_classes)
    if isinstance(images, np.memmap):
        # Images on disk (above the memory budget): shuffle and batch row numbers, read each
        # batch's rows from the memory-mapped file. Same seed, same order as in memory.
        dataset = tf.data.Dataset.range(len(images))
        if shuffle:
            dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        shape = images.shape[1:]

        def read_rows(rows: Any) -> tuple[Any, Any]:
            x, y = tf.numpy_function(lambda r: (images[r], targets[r]), [rows], (tf.uint8, tf.float32))
            x.set_shape((None, *shape))
            y.set_shape((None, targets.shape[1]))
            return tf.cast(x, tf.float32), y

        dataset = dataset.batch(batch_size).map(read_rows, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, targets))
        if shuffle:
            dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                                num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        from ._layers import augmentation_block

        augmentation = augmentation_block(seed)
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_trial(config: TrialConfig, data: TrialData, callbacks: Sequence[Any] = (),
                *, verbose: int = 0, keep_model: bool = False,
                feature_cache_dir: str | Path | None = None, jit_compile: bool | None = None) -> TrialResult:
    """Train `config` on `data.x_train` and measure `data.x_val` after the last epoch.

    `callbacks` are plain Keras callbacks (the search layer passes its pruning callback); if one
    of them is an `EpochHistory`, it is the one that records the curves. A frozen, unaugmented
    trial trains its head on cached backbone features in `feature_cache_dir` (default
    $MEDSWEEP_CACHE_DIR or ~/.cache/medsweep/features). `jit_compile` forces XLA on or off
    (None: Keras decides, which means on with a GPU and off on CPU)."""
    from ._cached_features import cache_applies, train_on_cached_features, warm_up_head

    if cache_applies(config):
        return train_on_cached_features(config, data, callbacks, verbose=verbose, keep_model=keep_model,
                                        cache_dir=feature_cache_dir)
    initial_head = None
    if config.frozen_warmup_epochs > 0 and config.fine_tune_fraction > 0:
        initial_head = warm_up_head(config, data, feature_cache_dir)
    keras = import_keras()
    from ._layers import EpochHistory
    from ._model import build_model
    from ._runtime import apply_precision_policy, jit_compile_setting

    keras.backend.clear_session()
    apply_precision_policy()
    if jit_compile is None:
        jit_compile = jit_compile_setting()
    keras.utils.set_random_seed(config.seed)
    recorder = next((c for c in callbacks if isinstance(c, EpochHistory)), None)
    all_callbacks = list(callbacks)
    if recorder is None:
        recorder = EpochHistory()
        all_callbacks.insert(0, recorder)
    model = build_model(config, data.num_classes)
    if initial_head is not None:
        from ._cached_features import set_head_weights

        set_head_weights(model, initial_head)
    if jit_compile is not None:
        model.jit_compile = jit_compile
    from ._balance import balance_training_data

    x_train, y_train, class_weight = balance_training_data(
        data.x_train, data.y_train, data.num_classes, class_weight=config.class_weight,
        oversample=config.oversample, seed=config.seed)
    train = make_dataset(x_train, y_train, data.num_classes, config.batch_size,
                         shuffle=True, seed=config.seed, augment=config.augmentation)
    validation = None
    if len(data.x_val):
        from ._layers import ExactValidation

        validation = make_dataset(data.x_val, data.y_val, data.num_classes, config.batch_size,
                                  shuffle=False, seed=config.seed)
        all_callbacks.insert(0, ExactValidation(validation, data.y_val, data.class_names, config.batch_size))
    model.fit(train, epochs=config.epochs, callbacks=all_callbacks,
              verbose=verbose, shuffle=False, class_weight=class_weight)
    metrics: dict[str, Any] = {}
    outputs = None
    if validation is not None:
        outputs = model.predict(validation, verbose=0)
        metrics = classification_metrics(data.y_val, outputs, data.class_names)
    result = TrialResult(config, recorder.history, metrics, model if keep_model else None,
                         outputs=None if outputs is None else class_probabilities(outputs))
    if not keep_model:
        del model
        keras.backend.clear_session()
        gc.collect()
    return result


def save_model(model: Any, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Save as .keras with medsweep's metadata (class names, config, fingerprint) inside the
    same zip, so one file is enough to predict."""
    import_keras()
    path = Path(path)
    if path.suffix != ".keras":
        raise DataError(f"model file {path} must end in .keras; pass e.g. -o model.keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(_METADATA_ENTRY, json.dumps(metadata, indent=2))
    return path


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata `save_model` stored (no Keras import)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist; train one with `medsweep train`")
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(_METADATA_ENTRY))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise DataError(
            f"{path} is not a model saved by `medsweep train` (no {_METADATA_ENTRY} inside); retrain it"
        ) from None


def load_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by `save_model` and its metadata."""
    metadata = read_model_metadata(path)
    keras = import_keras()
    from . import _layers  # noqa: F401  registers BackbonePreprocess for deserialisation

    return keras.models.load_model(path, compile=False), metadata


def predict_files(model_path: str | Path, files: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each file's predicted class and its probability, plus every class's probability."""
    model, metadata = load_model(model_path)
    class_names = metadata["class_names"]
    size = int(model.input_shape[1])
    from ._formats import model_decoding

    decoding = model_decoding(metadata)
    images = np.stack([decode_image(Path(f), size, decoding) for f in files]).astype(np.float32)
    probabilities = class_probabilities(model.predict(images, verbose=0))
    rows = []
    for file, row in zip(files, probabilities):
        best = int(row.argmax())
        rows.append({"file": str(file), "class": class_names[best], "probability": float(row[best]),
                     "probabilities": {name: float(p) for name, p in zip(class_names, row)}})
    return rows
