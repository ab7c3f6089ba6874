"""Imports Keras (and so TensorFlow) on first use, quietly; nothing else in `objectives` does."""

from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType

VERBOSE_ENV = "MEDSWEEP_VERBOSE"  # set by `medsweep --verbose`: keep TensorFlow's start-up lines
# What TensorFlow's C++ side prints while it loads on a machine without a GPU, before its log
# level applies (absl logs to stderr until initialised): noise to a user, dropped.
_START_UP_NOISE = ("absl::InitializeLog", "cudart_stub.cc", "cpu_feature_guard.cc", "To enable the following instructions",
                   "oneDNN custom operations", "cuda_dnn.cc", "cuda_blas.cc", "cuda_fft.cc", "cuda_platform.cc",
                   "Unable to register cu", "computation placer already registered")


def import_keras() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "keras" in sys.modules or os.environ.get(VERBOSE_ENV):
        import keras

        return keras
    return _import_quietly()


def _import_quietly() -> ModuleType:
    """Import Keras with the process's stderr (file descriptor 2, which C++ writes to) caught,
    then pass on every line that is not start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(noise in line for noise in _START_UP_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))
    return keras
