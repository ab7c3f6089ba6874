"""Search spaces: each TrialConfig field is a categorical list, a {low, high, log} range or a
fixed value. Loaded from YAML, validated with messages that name the parameter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medsweep.objectives import DEFAULT_CONFIG, ObjectiveError, TrialConfig
from medsweep.objectives.config import CONFIG_FIELDS, check_config_value, config_field_type

from .._errors import SpaceError

SURVEY_BACKBONES = ["InceptionV3", "DenseNet201", "ResNet152V2", "Xception", "VGG19"]

DEFAULT_SPACE: dict[str, Any] = {
    "backbone": list(SURVEY_BACKBONES),
    "learning_rate": {"low": 1e-6, "high": 1e-2, "log": True},
    # Up to the survey's longest run (40 epochs at lr 1e-5); a 60-epoch 5-fold fine-tune of even
    # MobileNet alpha 0.25 at 224 px takes over 30 minutes on two CPU cores.
    "epochs": {"low": 5, "high": 40},
    "batch_size": [4, 8, 16, 32],
    # How much of the backbone trains, from the top: none (a head on cached features), the top
    # 30%, or all of it. A budgeted search (`worker --budget`) tries them in that order.
    "fine_tune_fraction": [0.0, 0.3, 1.0],
    # Epochs of a frozen head before any backbone layer trains, so a random head's gradients
    # do not wreck the pretrained features; served by the feature cache.
    "frozen_warmup_epochs": {"low": 1, "high": 10},
    # The trained backbone layers learn at learning_rate x this (the head at learning_rate): a
    # tenth is the usual fine-tuning rate, the full rate suits low learning rates. Searched, since
    # which wins depends on the head's rate (docs/finetuning.md); meaningless in frozen trials.
    "backbone_lr_factor": [0.1, 1.0],
    # Augmentation from pre-computed views of each image, which the feature cache serves
    # (0 would augment on the fly and switch the cache off for every frozen trial).
    "augmented_views": 4,
}

# Parameters only a fine-tuning trial (fine_tune_fraction > 0) uses: a frozen trial does not sample them.
FINE_TUNING_ONLY = ("frozen_warmup_epochs", "backbone_lr_factor")

_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class Fixed:
    value: Any


Parameter = Categorical | Range | Fixed


def _check_value(name: str, value: Any) -> Any:
    try:
        return check_config_value(name, value)
    except ObjectiveError as error:
        raise SpaceError(f"search space parameter {name}: {error}") from None


def _parse_parameter(name: str, spec: Any) -> Parameter:
    if name not in CONFIG_FIELDS:
        raise SpaceError(
            f"unknown search space parameter {name!r}; known parameters: {', '.join(CONFIG_FIELDS)}"
        )
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"search space parameter {name}: the list of choices is empty; give at least one value")
        choices = tuple(_check_value(name, value) for value in spec)
        if any(not isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            raise SpaceError(f"search space parameter {name}: choices must be plain values, got {spec!r}")
        return Categorical(choices)
    if isinstance(spec, dict):
        unknown = set(spec) - _RANGE_KEYS
        if unknown or not {"low", "high"} <= set(spec):
            raise SpaceError(
                f"search space parameter {name}: a range needs low and high (optional log, step), got {spec!r}"
            )
        kind = config_field_type(name)
        if kind not in (int, float):
            raise SpaceError(f"search space parameter {name} is not numeric; give a list of choices instead of {spec!r}")
        low, high = _check_value(name, spec["low"]), _check_value(name, spec["high"])
        if not low < high:
            raise SpaceError(f"search space parameter {name}: low ({low}) must be below high ({high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"search space parameter {name}: log must be true or false, got {log!r}")
        if log and low <= 0:
            raise SpaceError(f"search space parameter {name}: a log range needs low > 0, got {low}")
        step = spec.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            raise SpaceError(f"search space parameter {name}: step must be a positive number, got {step!r}")
        if step is not None and log:
            raise SpaceError(f"search space parameter {name}: step and log cannot be combined; drop one")
        return Range(low, high, log, step, integer=kind is int)
    return Fixed(_check_value(name, spec))


class SearchSpace:
    """A validated space: parameters to suggest and fixed values; samples TrialConfigs."""

    def __init__(self, spec: dict[str, Any]) -> None:
        if not isinstance(spec, dict):
            raise SpaceError(
                f"a search space must be a mapping of parameter names to choices, ranges or values, got {type(spec).__name__}"
            )
        self.spec = {name: spec[name] for name in spec}
        self.parameters: dict[str, Parameter] = {name: _parse_parameter(name, value) for name, value in spec.items()}
        # Build one config from the first choice/low end so cross-field problems show at load time.
        try:
            TrialConfig.from_dict(self._first_values())
        except ObjectiveError as error:
            raise SpaceError(f"search space: {error}") from None

    def _first_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            if isinstance(parameter, Fixed):
                values[name] = parameter.value
            elif isinstance(parameter, Categorical):
                values[name] = parameter.choices[0]
            else:
                values[name] = int(parameter.low) if parameter.integer else parameter.low
        return values

    @classmethod
    def default(cls, overrides: dict[str, Any] | None = None) -> "SearchSpace":
        """The default space with `overrides` (e.g. a YAML file's contents) on top."""
        return cls({**DEFAULT_SPACE, **(overrides or {})})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SearchSpace":
        """Load a space file; its parameters override the defaults."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise SpaceError(f"cannot read search space file {path} ({error.strerror}); check the --space path") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "invalid YAML"
            raise SpaceError(f"search space file {path} is not valid YAML{where}: {problem}; fix the file") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SpaceError(f"search space file {path} must map parameter names to values, got {type(loaded).__name__}")
        return cls.default(loaded)

    def suggest(self, trial: Any) -> TrialConfig:
        """Ask an Optuna trial for every searched parameter and build the TrialConfig.

        The fine-tuning-only parameters are asked for only when the trial fine-tunes: a frozen
        trial would sample values it never uses, and TPE would then learn from noise which of
        them go with good scores (a conditional space; the sampler groups it)."""
        values: dict[str, Any] = {}
        unconditional = [name for name in self.parameters if name not in FINE_TUNING_ONLY]
        for name in unconditional + [name for name in FINE_TUNING_ONLY if name in self.parameters]:
            parameter = self.parameters[name]
            if name in FINE_TUNING_ONLY and not isinstance(parameter, Fixed) \
                    and not values.get("fine_tune_fraction", DEFAULT_CONFIG.fine_tune_fraction):
                values[name] = getattr(DEFAULT_CONFIG, name)  # unused by a frozen trial
                continue
            if isinstance(parameter, Fixed):
                values[name] = parameter.value
            elif isinstance(parameter, Categorical):
                values[name] = trial.suggest_categorical(name, list(parameter.choices))
            elif parameter.integer:
                values[name] = trial.suggest_int(name, int(parameter.low), int(parameter.high),
                                                 step=int(parameter.step or 1), log=parameter.log)
            else:
                values[name] = trial.suggest_float(name, parameter.low, parameter.high,
                                                   step=parameter.step, log=parameter.log)
        return TrialConfig.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.spec)
