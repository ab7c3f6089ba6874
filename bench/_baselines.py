"""The benchmarks' plain-Keras baseline, written once: the template's head on MobileNet alpha
0.25 with every layer trained, as the Keras transfer-learning guide writes it (`base(x,
training=False)`, Adam, cross-entropy), with or without the template's augmentation. It shares
nothing with medsweep's training path on purpose: it is the yardstick medsweep is measured
against. bench.quality runs it without augmentation (the survey's plain recipe), bench.finetune
with it (beside medsweep's own recipes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from ._common import MOBILENET_FILE


def plain_keras_fold(values: dict[str, Any], fold: Any, *, augment: bool) -> tuple[float, dict[str, Any]]:
    """Validation AUC of one fold (and notes: output spread, how far BatchNorm's moving mean moved)
    for `values` (alpha, weights folder, image_size, learning_rate, epochs, batch_size,
    dense_units, dropout, seed)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    keras.backend.clear_session()
    seed = values["seed"]
    keras.utils.set_random_seed(seed)
    size = values["image_size"]
    base = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=values["alpha"], include_top=False,
                                        weights=str(Path(values["weights"]) / MOBILENET_FILE))  # no top: any size
    base.trainable = True
    inputs = keras.Input((size, size, 3))
    x = keras.applications.mobilenet.preprocess_input(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(values["dense_units"], activation="relu")(x)
    x = keras.layers.Dropout(values["dropout"])(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(values["learning_rate"]), loss="binary_crossentropy")
    train = tf.data.Dataset.from_tensor_slices((fold.x_train, fold.y_train.astype("float32")))
    train = train.shuffle(len(fold.x_train), seed=seed).batch(values["batch_size"])
    if augment:
        augmentation = keras.Sequential([
            keras.layers.RandomShear(x_factor=0.2, y_factor=0.2, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 3),
            keras.layers.RandomFlip("horizontal", seed=seed + 4)])
        train = train.map(lambda x, y: (augmentation(tf.cast(x, tf.float32), training=True), y),
                          num_parallel_calls=tf.data.AUTOTUNE)
    else:
        train = train.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    batchnorm = next(layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
    before = np.array(batchnorm.moving_mean)
    model.fit(train.prefetch(tf.data.AUTOTUNE), epochs=values["epochs"], verbose=0)
    outputs = model.predict(fold.x_val.astype("float32"), batch_size=32, verbose=0)[:, 0]
    # Whether training moved the moving statistics, i.e. whether training=False held.
    moved = float(np.abs(np.array(batchnorm.moving_mean) - before).max())
    keras.backend.clear_session()
    return float(roc_auc_score(fold.y_val, outputs)), {"output_spread": float(np.std(outputs)),
                                                       "bn_moving_mean_change": moved}


def cross_validate_plain_keras(values: dict[str, Any], folds: Sequence[Any], *, augment: bool) -> dict[str, Any]:
    """`plain_keras_fold` on every fold: the mean, its 95% interval, the folds and the seconds."""
    from medsweep.objectives.metrics import cv_summary

    started = time.perf_counter()
    aucs = [plain_keras_fold(values, fold, augment=augment)[0] for fold in folds]
    share = sum(len(f.y_val) for f in folds) / sum(len(f.y_val) + len(f.y_train) for f in folds)
    summary = cv_summary(aucs, share, (0.0, 1.0))
    return {"mean": summary["mean"], "ci95": summary["ci95"], "folds": aucs,
            "seconds": round(time.perf_counter() - started, 1)}
