"""The input pipeline of a fit: in-memory or memory-mapped inputs (images or cached trunk
outputs) shuffled, batched, cast and augmented with tf.data, and the template's augmentation."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._keras import import_keras


def augmentation_block(seed: int) -> Any:
    """The template's ImageDataGenerator settings (shear 0.2, zoom 0.2, rotation 20 degrees,
    shifts 0.2, horizontal flip) as Keras preprocessing layers, active only in training."""
    keras = import_keras()
    return keras.Sequential(
        [
            keras.layers.RandomShear(x_factor=0.2, y_factor=0.2, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 3),
            keras.layers.RandomFlip("horizontal", seed=seed + 4),
        ],
        name="augmentation",
    )


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
        augmentation = augmentation_block(seed)
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
