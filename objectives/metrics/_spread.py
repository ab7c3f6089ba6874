"""Does a model see its images? The spread of its predicted probabilities across images, and the
one-line warning when they are (nearly) constant: then an AUC ranks rounding noise, not images."""

from __future__ import annotations

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


def constant_output_warning(outputs: np.ndarray) -> str | None:
    """A one-line warning when validation outputs are (nearly) the same for every image, else None."""
    spread = output_spread(outputs)
    if not spread < CONSTANT_OUTPUT_SPREAD:
        return None
    return (f"outputs constant (spread {spread:.2g} across {len(outputs)} validation images): the network does not "
            "see the images (low-range input?); try intensity: minmax")
