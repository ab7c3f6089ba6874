"""Class imbalance: balanced loss weights (scikit-learn's compute_class_weight) and random
oversampling of the smaller classes, both on training data only."""

from __future__ import annotations

import numpy as np


def class_weights(mode: str, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Keras `class_weight` for `mode` (none | balanced); None means unweighted."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    by_class = {int(c): float(w) for c, w in zip(present, weights)}
    return {label: by_class.get(label, 1.0) for label in range(num_classes)}


def oversample_indices(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices that keep every training image and redraw (with replacement, seeded) images of
    each smaller class until it matches the largest class."""
    from sklearn.utils import resample

    labels = np.asarray(labels)
    largest = int(np.bincount(labels).max())
    chosen = [np.arange(len(labels))]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        missing = largest - len(members)
        if missing > 0:
            chosen.append(resample(members, replace=True, n_samples=missing, random_state=seed + int(label)))
    return np.sort(np.concatenate(chosen))


def balance_training_data(images: np.ndarray, labels: np.ndarray, num_classes: int, *, class_weight: str,
                          oversample: bool, seed: int) -> tuple[np.ndarray, np.ndarray, dict[int, float] | None]:
    """The training arrays after optional oversampling, and the Keras class weights to use."""
    if oversample:
        index = oversample_indices(labels, seed)
        images, labels = images[index], labels[index]
    return images, labels, class_weights(class_weight, labels, num_classes)
