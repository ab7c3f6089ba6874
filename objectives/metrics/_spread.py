"""Does a model see its images? The spread of its predicted probabilities across images, and the
one-line warning when they are (nearly) constant, or (given the class names) when every image is
predicted as one class: then an AUC ranks rounding noise, not images."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._outputs import class_probabilities


# Below this spread (the largest per-class standard deviation of the validation probabilities) a
# trained network answers alike for every image: its AUC ranks rounding noise, not images.
# Measured (tests/objectives/test_finetune_recipe.py): near-black fine-tunes 0 to 2e-4, the
# weakest model that still ranked its images right 0.025, models on brain_mri 0.1 and more.
CONSTANT_OUTPUT_SPREAD = 0.005


def output_spread(outputs: np.ndarray) -> float:
    """How much the predicted probabilities vary across images (largest per-class std)."""
    probabilities = class_probabilities(np.asarray(outputs))
    return float(probabilities.std(axis=0).max()) if len(probabilities) > 1 else float("nan")


def constant_output_warning(outputs: np.ndarray, images: str = "validation images",
                            class_names: Sequence[str] | None = None, threshold: float | None = None,
                            labels: Sequence[int] | None = None) -> str | None:
    """A one-line warning when the outputs are (nearly) the same for every image, else None. With
    `class_names` (and a two-class model's `threshold`, if it has one), also when every image is
    predicted as the same class, unless the true `labels`, when given, hold one class only;
    `images` names the images ("test images")."""
    spread = output_spread(outputs)
    if spread < CONSTANT_OUTPUT_SPREAD:
        return (f"outputs constant (spread {spread:.2g} across {len(outputs)} {images}): the network does not "
                "see the images (low-range input?); try intensity: minmax")
    if class_names is None or len(outputs) < 2 or len(class_names) < 2:
        return None
    if labels is not None and len(np.unique(np.asarray(labels))) < 2:
        return None  # images of one class: one predicted class may be right
    probabilities = class_probabilities(np.asarray(outputs))
    if threshold is not None and probabilities.shape[1] == 2:
        predicted = (probabilities[:, 1] >= threshold).astype(np.int64)
    else:
        predicted = probabilities.argmax(axis=1)
    if len(np.unique(predicted)) > 1:
        return None
    return (f"every one of the {len(outputs)} {images} is predicted as {class_names[int(predicted[0])]!r}: the model "
            "does not tell the classes apart, whatever its accuracy says")
