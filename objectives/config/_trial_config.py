"""TrialConfig: everything one training run needs, as a frozen dataclass that round-trips
through plain dicts and YAML. Unknown keys and bad values are errors that name them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from ._backbones import BACKBONES
from .._errors import ConfigError
from .._text import quoted


def _number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {quoted(value)}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be a whole number, got {quoted(value)}")
        return int(value)
    if not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be finite, got {quoted(value)}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    number = _number(name, value, int)
    if number < 1:
        raise ConfigError(f"{name} must be at least 1, got {quoted(value)}")
    return number


def _fraction(name: str, value: Any, *, closed_top: bool) -> float:
    number = _number(name, value, float)
    if number < 0 or number > 1 or (not closed_top and number == 1):
        top = "1" if closed_top else "below 1"
        raise ConfigError(f"{name} must be between 0 and {top}, got {quoted(value)}")
    return number


def _check_backbone(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in BACKBONES:
        raise ConfigError(f"unknown backbone {quoted(value)}; choose one of: {', '.join(BACKBONES)}")
    return str(value)


def _check_image_size(name: str, value: Any) -> int | None:
    if value is None:
        return None
    size = _number(name, value, int)
    if size < 32 or size > 1024:
        raise ConfigError(f"image_size must be between 32 and 1024 pixels, got {quoted(value)}")
    return size


def _check_weights(name: str, value: Any) -> str:
    if value is None:
        return "none"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"weights must be imagenet, none or a path, got {quoted(value)}")
    lowered = value.strip().lower()
    return lowered if lowered in ("imagenet", "none") else value


def _check_learning_rate(name: str, value: Any) -> float:
    rate = _number(name, value, float)
    if not 0 < rate < 1:
        raise ConfigError(f"learning_rate must be between 0 and 1 (exclusive), got {quoted(value)}")
    return rate


def _check_alpha(name: str, value: Any) -> float:
    alpha = _number(name, value, float)
    if not 0 < alpha <= 2:
        raise ConfigError(f"alpha (MobileNet width) must be in (0, 2], got {quoted(value)}")
    return alpha


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {quoted(value)}")
    return value


def _check_seed(name: str, value: Any) -> int:
    seed = _number(name, value, int)
    if seed < 0:
        raise ConfigError(f"seed must be 0 or more, got {quoted(value)}")
    return seed


def _one_of(allowed: tuple[str, ...], meaning: str = "") -> Callable[[str, Any], str]:
    """A validator for a field that takes one of `allowed`; `meaning` says what the field does."""

    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}{meaning}, got {quoted(value)}")
        return str(value)

    return check


CLASS_WEIGHTS = ("none", "balanced")


MAX_AUGMENTED_VIEWS = 64


def _check_augmented_views(name: str, value: Any) -> int:
    views = _number(name, value, int)
    if not 0 <= views <= MAX_AUGMENTED_VIEWS:
        raise ConfigError(f"augmented_views must be between 0 (exact on-the-fly augmentation) and "
                          f"{MAX_AUGMENTED_VIEWS}, got {quoted(value)}")
    return views


def _check_warmup_epochs(name: str, value: Any) -> int:
    epochs = _number(name, value, int)
    if epochs < 0:
        raise ConfigError(f"frozen_warmup_epochs must be 0 (no warm-up) or more, got {quoted(value)}")
    return epochs


INTENSITIES = ("raw", "minmax", "percentile")




BATCHNORM_MODES = ("frozen", "affine", "batch")




def _check_backbone_lr_factor(name: str, value: Any) -> float:
    factor = _number(name, value, float)
    if not 0 < factor <= 1:
        raise ConfigError(f"backbone_lr_factor must be in (0, 1] (the backbone's learning rate is learning_rate "
                          f"times it), got {quoted(value)}")
    return factor


# name -> (python type used for search ranges, validator)
_FIELD_CHECKS: dict[str, tuple[type, Callable[[str, Any], Any]]] = {
    "backbone": (str, _check_backbone),
    "image_size": (int, _check_image_size),
    "weights": (str, _check_weights),
    "alpha": (float, _check_alpha),
    "learning_rate": (float, _check_learning_rate),
    "epochs": (int, _positive_int),
    "batch_size": (int, _positive_int),
    "dense_units": (int, _positive_int),
    "dropout": (float, lambda n, v: _fraction(n, v, closed_top=False)),
    "augmentation": (bool, _check_bool),
    "fine_tune_fraction": (float, lambda n, v: _fraction(n, v, closed_top=True)),
    "seed": (int, _check_seed),
    "feature_cache": (bool, _check_bool),
    "augmented_views": (int, _check_augmented_views),
    "frozen_warmup_epochs": (int, _check_warmup_epochs),
    "class_weight": (str, _one_of(CLASS_WEIGHTS)),
    "oversample": (bool, _check_bool),
    "intensity": (str, _one_of(INTENSITIES, " (per-image rescaling to 0-255 before the backbone)")),
    "batchnorm": (str, _one_of(BATCHNORM_MODES, " (how a fine-tuned pretrained backbone's BatchNormalization "
                                                "layers train)")),
    "backbone_lr_factor": (float, _check_backbone_lr_factor),
}


@dataclass(frozen=True)
class TrialConfig:
    """One training run. Defaults are the survey template's (InceptionV3, lr 1e-4, 20 epochs,
    batch 5, Dense 256 + Dropout 0.5, augmentation on, frozen backbone)."""

    backbone: str = "InceptionV3"
    image_size: int | None = None  # None: the backbone's default input size
    weights: str = "imagenet"  # imagenet | none | a weights file or a folder of them
    alpha: float = 1.0  # width multiplier, MobileNet and MobileNetV2 only
    learning_rate: float = 1e-4
    epochs: int = 20
    batch_size: int = 5
    dense_units: int = 256
    dropout: float = 0.5
    augmentation: bool = True
    fine_tune_fraction: float = 0.0  # share of backbone layers, from the top, that train
    seed: int = 0
    # Frozen trials train the head on cached backbone features (same result, much faster).
    feature_cache: bool = True
    # >0: augmented frozen trials use this many pre-computed augmented views per image (cached;
    # an approximation of on-the-fly augmentation); 0: exact on-the-fly augmentation.
    augmented_views: int = 0
    # Fine-tuning trials first train the head alone for this many epochs (on cached features).
    frozen_warmup_epochs: int = 0
    class_weight: str = "none"  # none | balanced: weight the loss by inverse class frequency
    oversample: bool = False  # repeat minority-class training images up to the largest class
    # Per-image rescaling to 0-255 inside the model, before the backbone's preprocessing: raw
    # (none), minmax (lowest to highest value) or percentile (0.5th to 99.5th, clipped).
    intensity: str = "raw"
    # How a fine-tuned pretrained backbone's BatchNormalization layers train (docs/finetuning.md):
    # frozen (inference mode, scale and offset fixed), affine (inference-mode statistics, scale
    # and offset trained) or batch (batch statistics in training, as plain Keras 3 does).
    batchnorm: str = "frozen"
    # The fine-tuned backbone layers learn at learning_rate times this; the head at learning_rate.
    backbone_lr_factor: float = 1.0

    def __post_init__(self) -> None:
        for name, (_, check) in _FIELD_CHECKS.items():
            object.__setattr__(self, name, check(name, getattr(self, name)))
        backbone = BACKBONES[self.backbone]
        if self.alpha != 1.0 and not backbone.has_alpha:
            raise ConfigError(
                f"alpha {self.alpha:g} only applies to MobileNet and MobileNetV2, not {self.backbone}; "
                "remove alpha or set it to 1.0"
            )
        # Keras' own limits, checked here so a space file is refused at `create`, not in every trial.
        if self.resolved_image_size < backbone.min_size:
            raise ConfigError(
                f"image_size {self.resolved_image_size} is too small for {self.backbone} (minimum "
                f"{backbone.min_size}); raise image_size or choose another backbone"
            )
        if self.weights == "imagenet":
            backbone.check_alpha_has_weights(self.alpha)

    @property
    def resolved_image_size(self) -> int:
        """The input size in pixels: image_size, or the backbone's default."""
        return self.image_size or BACKBONES[self.backbone].default_size

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        """Build from a plain mapping; unknown keys are an error that names them."""
        if not isinstance(values, dict):
            raise ConfigError(f"a trial config must be a mapping of settings, got {type(values).__name__}")
        unknown = sorted(set(values) - set(_FIELD_CHECKS))
        if unknown:
            raise ConfigError(
                f"unknown config key {quoted(unknown[0])}; known keys: {', '.join(_FIELD_CHECKS)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes)


def config_field_type(name: str) -> type:
    """The Python type of a TrialConfig field (str, int, float or bool)."""
    return _FIELD_CHECKS[name][0]


def check_config_value(name: str, value: Any) -> Any:
    """Validate one field on its own (used by search space files); names the field on error."""
    if name not in _FIELD_CHECKS:
        raise ConfigError(f"unknown config key {quoted(name)}; known keys: {', '.join(_FIELD_CHECKS)}")
    return _FIELD_CHECKS[name][1](name, value)


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialConfig))
DEFAULT_CONFIG = TrialConfig()
