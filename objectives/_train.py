"""One training run: fit a TrialConfig on decoded arrays with the callbacks the caller passes,
measuring the validation set every epoch. One loop (`fit_and_measure`) serves every trial,
whether its trunk runs live or comes from the feature cache. Also saving a model with its class
names, and predicting."""

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
from ._model import BACKBONE, POOLED, TrialPlan

_METADATA_ENTRY = "medsweep.json"


@dataclass
class TrialResult:
    """What a run produced: per-epoch history, final validation metrics and the model."""

    config: TrialConfig
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)
    outputs: Any = field(default=None, repr=False)  # validation class probabilities, (n, classes)
    feature_cache: str = "off"  # off | filled | hit: whether the trial trained on cached trunk outputs
    trunk_cut: str | None = None  # where cached trunk outputs came from: "pooled" or a backbone layer's name
    warning: str | None = None  # e.g. constant outputs: a score that measures nothing (see `constant_output_warning`)


# Below this spread (the largest per-class standard deviation of the validation probabilities) a
# trained network answers alike for every image: its AUC ranks rounding noise, not images.
# Measured (tests/objectives/test_finetune_recipe.py): near-black fine-tunes 0 to 2e-4, the
# weakest model that still ranked its images right 0.025, models on brain_mri 0.1 and more.
CONSTANT_OUTPUT_SPREAD = 0.005


def output_spread(outputs: np.ndarray) -> float:
    """How much the predicted probabilities vary across images (largest per-class std)."""
    probabilities = class_probabilities(np.asarray(outputs))
    return float(probabilities.std(axis=0).max()) if len(probabilities) > 1 else float("nan")


def constant_output_warning(outputs: np.ndarray) -> str | None:
    """A one-line warning when validation outputs are (nearly) the same for every image, else None."""
    spread = output_spread(outputs)
    if not spread < CONSTANT_OUTPUT_SPREAD:
        return None
    return (f"outputs constant (spread {spread:.2g} across {len(outputs)} validation images): the network does not "
            "see the images (low-range input?); try intensity: minmax")


def _targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    if num_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(num_classes, dtype=np.float32)[labels]


def make_dataset(inputs: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 *, shuffle: bool, seed: int, augment: bool = False, one_view_per_step: bool = False) -> Any:
    """A tf.data pipeline over in-memory inputs (uint8 images or float32 trunk outputs):
    shuffle, batch, cast (and augment) in parallel, prefetch. Augmentation lives here rather
    than in the model, so it runs beside training and a saved model holds only what prediction
    needs. With `one_view_per_step`, inputs are (n, views, ...) and each step draws one view."""
    import_keras()
    import tensorflow as tf

    targets = _targets(labels, num_classes)
    if isinstance(inputs, np.memmap):
        # Images on disk (above the memory budget): shuffle and batch row numbers, read each
        # batch's rows from the memory-mapped file. Same seed, same order as in memory.
        dataset = tf.data.Dataset.range(len(inputs))
        if shuffle:
            dataset = dataset.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
        shape, dtype = inputs.shape[1:], tf.as_dtype(inputs.dtype)

        def read_rows(rows: Any) -> tuple[Any, Any]:
            x, y = tf.numpy_function(lambda r: (inputs[r], targets[r]), [rows], (dtype, tf.float32))
            x.set_shape((None, *shape))
            y.set_shape((None, targets.shape[1]))
            return x, y

        dataset = dataset.batch(batch_size).map(read_rows, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
        if shuffle:
            dataset = dataset.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
        if one_view_per_step:
            views = inputs.shape[1]
            dataset = dataset.map(lambda x, y: (x[tf.random.uniform((), 0, views, dtype=tf.int32, seed=seed)], y))
        dataset = dataset.batch(batch_size)
    if inputs.dtype != np.float32:
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        from ._layers import augmentation_block

        augmentation = augmentation_block(seed)
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def fit_and_measure(model: Any, config: TrialConfig, plan: TrialPlan, x_train: np.ndarray, y_train: np.ndarray,
                    x_val: np.ndarray, y_val: np.ndarray, class_names: Sequence[str],
                    callbacks: Sequence[Any] = (), *, verbose: int = 0,
                    ) -> tuple[dict[str, list[float]], dict[str, Any], np.ndarray | None]:
    """The one training loop: fit a compiled model (images or trunk outputs in) for
    `config.epochs`, measuring the validation set exactly after every epoch, then once more
    with every metric. Returns (per-epoch history, final metrics, validation outputs).

    `callbacks` are plain Keras callbacks; if one of them is an `EpochHistory`, it is the one
    that records the curves."""
    from ._balance import balance_training_data
    from ._layers import EpochHistory, ExactValidation, check_finite, predict_outputs

    num_classes = len(class_names)
    recorder = next((c for c in callbacks if isinstance(c, EpochHistory)), None)
    all_callbacks = list(callbacks)
    if recorder is None:
        recorder = EpochHistory()
        all_callbacks.insert(0, recorder)
    x, y, class_weight = balance_training_data(x_train, y_train, num_classes, class_weight=config.class_weight,
                                               oversample=config.oversample, seed=config.seed)
    train = make_dataset(x, y, num_classes, config.batch_size, shuffle=True, seed=config.seed,
                         augment=plan.augment, one_view_per_step=plan.views > 0)
    validation: Any = None
    if len(x_val):
        # Pooled trunk outputs in memory are called directly; images and cut-point outputs
        # (too large for one call) stream through a pipeline.
        in_memory = plan.cached and plan.cut == POOLED
        validation = x_val if in_memory else make_dataset(x_val, y_val, num_classes, config.batch_size,
                                                          shuffle=False, seed=config.seed)
        all_callbacks.insert(0, ExactValidation(validation, y_val, num_classes, config.batch_size))
    model.fit(train, epochs=config.epochs, callbacks=all_callbacks, verbose=verbose, shuffle=False,
              class_weight=class_weight)
    # A diverged run without validation data (a final model) must not be saved as if it trained.
    losses = recorder.history.get("loss", [])
    check_finite(losses, len(losses), model, "training losses")
    if validation is None:
        return recorder.history, {}, None
    outputs = predict_outputs(model, validation, config.batch_size)
    return recorder.history, classification_metrics(y_val, outputs, class_names), outputs


def train_trial(config: TrialConfig, data: TrialData, callbacks: Sequence[Any] = (),
                *, verbose: int = 0, keep_model: bool = False,
                feature_cache_dir: str | Path | None = None, jit_compile: bool | None = None) -> TrialResult:
    """Train `config` on `data.x_train` and measure `data.x_val` after every epoch.

    `callbacks` are plain Keras callbacks (the search layer passes its pruning callback); if one
    of them is an `EpochHistory`, it is the one that records the curves. `_model.plan_trial`
    decides how the trial trains: a frozen, unaugmented trial trains its head on cached backbone
    features in `feature_cache_dir` (default $MEDSWEEP_CACHE_DIR or ~/.cache/medsweep/features),
    a partial fine-tune trains the backbone's top on cached outputs of its frozen lower part;
    a two-stage trial first trains its head alone. `jit_compile` forces XLA on or off for live
    trunks (None: Keras decides, which means on with a GPU and off on CPU)."""
    from ._model import plan_trial

    plan = plan_trial(config)
    head = None
    if plan.warmup is not None:
        head = _train_planned(plan.warmup, plan_trial(plan.warmup), data, (), verbose=0, keep_model=False,
                              cache_dir=feature_cache_dir, jit_compile=jit_compile, initial_head=None)[1]
    return _train_planned(config, plan, data, callbacks, verbose=verbose, keep_model=keep_model,
                          cache_dir=feature_cache_dir, jit_compile=jit_compile, initial_head=head)[0]


def _train_planned(config: TrialConfig, plan: TrialPlan, data: TrialData, callbacks: Sequence[Any], *, verbose: int,
                   keep_model: bool, cache_dir: str | Path | None, jit_compile: bool | None,
                   initial_head: dict[str, list[np.ndarray]] | None) -> tuple[TrialResult, dict[str, list[np.ndarray]]]:
    """Build (or reuse) the model `plan` calls for, then `fit_and_measure`; returns the result
    and the trained head's weights. The plan changes only where the trunk's output comes from."""
    keras = import_keras()
    from ._model import (build_model, compiled_head, head_weights, initial_head_weights, set_head_weights,
                         set_trial_state)

    cut_model = None
    if plan.cached and plan.cut == BACKBONE:
        cut_model = _cut_cached_model(config, plan, data, cache_dir, jit_compile)
        if cut_model is None:  # no cacheable cut, or over the cut-point cache budget
            from ._model import plan_trial

            plan = plan_trial(config, cut_cache=False)
    if cut_model is not None:
        model, base, trunk = cut_model
        x_train, x_val, cache_state = trunk.train, trunk.val, "filled" if trunk.computed else "hit"
    elif plan.cached:
        from ._cached_features import cached_trunk_outputs
        from ._runtime import use_float32_policy

        trunk = cached_trunk_outputs(config, plan, data, cache_dir)
        use_float32_policy()  # cached features are float32 whatever a worker's precision option
        keras.backend.clear_session(free_memory=False)  # keeps the compiled heads
        feature_size = trunk.train.shape[-1]
        if initial_head is None:
            initial_head = initial_head_weights(config, feature_size, data.num_classes, trunk.backbone_draws)
        keras.utils.set_random_seed(config.seed)
        model = compiled_head(config, feature_size, data.num_classes)
        x_train, x_val, cache_state = trunk.train, trunk.val, "filled" if trunk.computed else "hit"
    else:
        from ._runtime import apply_precision_policy, jit_compile_setting

        keras.backend.clear_session()
        apply_precision_policy()
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, data.num_classes)
        if jit_compile is None:
            jit_compile = jit_compile_setting()
        if jit_compile is not None:
            model.jit_compile = jit_compile
        x_train, x_val, cache_state = data.x_train, data.x_val, "off"
    set_trial_state(model, config, initial_head)
    history, metrics, outputs = fit_and_measure(model, config, plan, x_train, data.y_train, x_val, data.y_val,
                                                data.class_names, callbacks, verbose=verbose)
    head = head_weights(model)
    kept = None
    if keep_model and cut_model is not None:  # the trained top and head on a full model that takes images
        from ._model import full_model_like

        kept = full_model_like(config, cut_model[1], model, data.num_classes)
    elif keep_model and plan.cached:  # the trained head on a full model that takes images
        keras.backend.clear_session()
        keras.utils.set_random_seed(config.seed)
        kept = build_model(config, data.num_classes)
        set_head_weights(kept, head)
    elif keep_model:
        kept = model
    warning = None
    if outputs is not None:
        metrics["output_spread"] = output_spread(outputs)
        warning = constant_output_warning(outputs)
    result = TrialResult(config, history, metrics, kept, feature_cache=cache_state, warning=warning,
                         outputs=None if outputs is None else class_probabilities(outputs),
                         trunk_cut=cut_model[2].cut if cut_model is not None else (POOLED if plan.cached else None))
    if not keep_model and not plan.cached:  # compiled heads and top models stay for later trials
        del model
        keras.backend.clear_session()
        gc.collect()
    return result, head


def _cut_cached_model(config: TrialConfig, plan: TrialPlan, data: TrialData, cache_dir: str | Path | None,
                      jit_compile: bool | None) -> tuple[Any, Any, Any] | None:
    """(compiled top model, the trial's backbone, its cached cut outputs) for a cut-point cached
    trial, or None when the backbone has no cacheable cut or its outputs exceed the budget.
    The top starts from the weights the full model would (`_model.compiled_top`)."""
    from ._cached_features import cached_trunk_outputs
    from ._model import compiled_top
    from ._runtime import jit_compile_setting, use_float32_policy

    use_float32_policy()  # cut outputs must not depend on a worker's precision option
    top = compiled_top(config, data.num_classes, jit_compile_setting() if jit_compile is None else jit_compile)
    if top is None:
        return None
    trunk = cached_trunk_outputs(config, plan, data, cache_dir, base=top.base, cut=top.cut)
    if trunk is None:
        return None
    return top.model, top.base, trunk


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
    from . import _layers  # noqa: F401  registers medsweep's layers for deserialisation

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
