"""Search spaces: each TrialConfig field is a categorical list, a {low, high, log} range or a
fixed value. Loaded from YAML, validated with messages that name the parameter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsweep.objectives import DEFAULT_CONFIG, ObjectiveError, TrialConfig, quoted
from medsweep.objectives.config import CONFIG_FIELDS, check_config_value, config_field_type

from .._errors import SpaceError
from .._yaml import load_yaml_file

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
# The parameters whose values limit each other (a backbone's smallest input, the widths with weights).
_COMBINED = ("backbone", "image_size", "alpha", "weights")


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
            f"unknown search space parameter {quoted(name)}; known parameters: {', '.join(CONFIG_FIELDS)}"
        )
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"search space parameter {name}: the list of choices is empty; give at least one value")
        choices = tuple(_check_value(name, value) for value in spec)
        if any(not isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            raise SpaceError(f"search space parameter {name}: choices must be plain values, got {quoted(spec)}")
        return Categorical(choices)
    if isinstance(spec, dict):
        unknown = set(spec) - _RANGE_KEYS
        if unknown or not {"low", "high"} <= set(spec):
            raise SpaceError(
                f"search space parameter {name}: a range needs low and high (optional log, step), got {quoted(spec)}"
            )
        kind = config_field_type(name)
        if kind not in (int, float):
            raise SpaceError(f"search space parameter {name} is not numeric; give a list of choices instead of {quoted(spec)}")
        low, high = _check_value(name, spec["low"]), _check_value(name, spec["high"])
        if not low < high:
            raise SpaceError(f"search space parameter {name}: low ({low}) must be below high ({high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"search space parameter {name}: log must be true or false, got {quoted(log)}")
        if log and low <= 0:
            raise SpaceError(f"search space parameter {name}: a log range needs low > 0, got {low}")
        step = spec.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            raise SpaceError(f"search space parameter {name}: step must be a positive number, got {quoted(step)}")
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

    def check_every_configuration(self) -> None:
        """Refuse a space where some trial could not run: every value each of backbone,
        image_size, alpha and weights can take (a range by its ends) is combined with every other
        and checked against the backbone's limits (smallest input, the widths Keras has weights
        for), and a weights folder or file must hold what each combination loads. Done at
        `create`, so the mistake is named there rather than by every trial that draws it."""
        import itertools

        from medsweep.objectives.config import get_backbone, resolve_weights

        values = {name: self._possible_values(name) for name in _COMBINED}
        alpha = self.parameters.get("alpha")
        if isinstance(alpha, Range) and any(w != "none" for w in values["weights"]) \
                and any(get_backbone(b).has_alpha for b in values["backbone"]):
            raise SpaceError("search space parameter alpha: a range of widths, but MobileNet's pretrained weights "
                             "exist for a few widths only (MobileNet 0.25, 0.5, 0.75, 1; MobileNetV2 0.35, 0.5, "
                             "0.75, 1, 1.3, 1.4); give a list of those, or set weights: none")
        base = self._first_values()
        for combination in itertools.product(*values.values()):
            chosen = dict(zip(values, combination))
            try:
                config = TrialConfig.from_dict({**base, **chosen})
                if config.weights not in ("imagenet", "none"):
                    resolve_weights(get_backbone(config.backbone), config.weights, config.resolved_image_size,
                                    config.alpha)
            except ObjectiveError as error:
                varied = ", ".join(f"{name} {quoted(chosen[name])}" for name in values if len(values[name]) > 1)
                raise SpaceError(f"search space: {error}" + (f" (the combination {varied})" if varied else "")) from None

    def _possible_values(self, name: str) -> list[Any]:
        parameter = self.parameters.get(name)
        if parameter is None:
            return [getattr(DEFAULT_CONFIG, name)]
        if isinstance(parameter, Fixed):
            return [parameter.value]
        if isinstance(parameter, Categorical):
            return list(dict.fromkeys(parameter.choices))
        ends = [parameter.low, parameter.high]
        return [int(end) for end in ends] if parameter.integer else ends

    @classmethod
    def default(cls, overrides: dict[str, Any] | None = None) -> "SearchSpace":
        """The default space with `overrides` (e.g. a YAML file's contents) on top."""
        return cls({**DEFAULT_SPACE, **(overrides or {})})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SearchSpace":
        """Load a space file; its parameters override the defaults."""
        path = Path(path)
        loaded = load_yaml_file(path, "search space file", "check the --space path", SpaceError)
        if loaded is None or loaded == {}:
            # An empty file would silently mean the default space (five large backbones).
            raise SpaceError(f"search space file {path} is empty; list the parameters to search in it, or leave "
                             "out --space to search the default space")
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
