"""Imports Keras (and so TensorFlow) on first use, quietly; nothing else in `objectives` does."""

from __future__ import annotations

import os
from types import ModuleType


def import_keras() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras
