"""Per-process training options a worker sets once: feature cache folder, mixed precision and
XLA. They travel as environment variables, so worker processes a supervisor starts (one per
GPU) inherit them, and `objectives` needs no knowledge of who started it.

- MEDSWEEP_CACHE_DIR: the feature cache folder (default ~/.cache/medsweep/features).
- MEDSWEEP_MIXED_PRECISION=1: train full models under Keras' mixed_float16 policy, only when a
  GPU is visible (on CPU float16 is slower, so the option is ignored there).
- MEDSWEEP_XLA=auto|on|off: XLA-compile training steps; auto lets Keras decide (on with a GPU,
  off on CPU, where compilation costs more than it saves for short trials)."""

from __future__ import annotations

import os
from pathlib import Path

from ..images import CACHE_ENV
from .._errors import ConfigError

MIXED_PRECISION_ENV = "MEDSWEEP_MIXED_PRECISION"
XLA_ENV = "MEDSWEEP_XLA"
XLA_CHOICES = ("auto", "on", "off")


def set_worker_options(*, cache_dir: str | Path | None = None, mixed_precision: bool = False,
                       xla: str = "auto") -> None:
    """Record a worker's options for this process and the processes it starts."""
    if xla not in XLA_CHOICES:
        raise ConfigError(f"xla must be one of {', '.join(XLA_CHOICES)}, got {xla!r}")
    if cache_dir:
        os.environ[CACHE_ENV] = str(Path(cache_dir).expanduser().resolve())
    os.environ[MIXED_PRECISION_ENV] = "1" if mixed_precision else "0"
    os.environ[XLA_ENV] = xla


def jit_compile_setting() -> bool | None:
    """True/False from MEDSWEEP_XLA=on/off; None (Keras decides) for auto or unset."""
    value = os.environ.get(XLA_ENV, "auto").strip().lower()
    if value not in XLA_CHOICES:
        raise ConfigError(f"{XLA_ENV} must be one of {', '.join(XLA_CHOICES)}, got {value!r}")
    return {"auto": None, "on": True, "off": False}[value]
