"""`medsweep paper`: the survey's ten configurations (five backbones x {lr 1e-4 for 20 epochs,
lr 1e-5 for 40 epochs}, batch size 5, the template's head and augmentation) enqueued as a
study's first trials, marked with the `baseline` user attribute, so the search that follows
is measured against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from objectives import DEFAULT_CONFIG

from .._errors import SpaceError, StudyError
from ._space import SURVEY_BACKBONES, Categorical, Fixed, Range, SearchSpace

BASELINE_ATTR = "baseline"
SURVEY_SETTINGS = ((1e-4, 20), (1e-5, 40))  # (learning rate, epochs): the template and the "improved" run
SURVEY_BATCH_SIZE = 5
# The template's head and augmentation: a searched parameter among these is pinned to the template value.
TEMPLATE_FIELDS = ("dense_units", "dropout", "augmentation", "fine_tune_fraction")


@dataclass(frozen=True)
class Baseline:
    label: str
    params: dict[str, Any]


def survey_baselines() -> tuple[Baseline, ...]:
    """The survey's ten runs, backbone by backbone, in the order the paper reports them."""
    baselines = []
    for backbone in SURVEY_BACKBONES:
        for learning_rate, epochs in SURVEY_SETTINGS:
            label = f"{backbone}, lr {learning_rate:.0e}, {epochs} epochs"
            baselines.append(Baseline(label, {"backbone": backbone, "learning_rate": learning_rate,
                                              "epochs": epochs, "batch_size": SURVEY_BATCH_SIZE}))
    return tuple(baselines)


def _required_values(space: SearchSpace) -> dict[str, list[Any]]:
    """Each baseline field and the values the baselines give it."""
    required: dict[str, list[Any]] = {}
    for baseline in survey_baselines():
        for name, value in baseline.params.items():
            required.setdefault(name, [])
            if value not in required[name]:
                required[name].append(value)
    for name in TEMPLATE_FIELDS:
        if name in space.parameters:
            required[name] = [getattr(DEFAULT_CONFIG, name)]
    return required


def _admits(parameter: Any, value: Any) -> bool:
    if isinstance(parameter, Categorical):
        return value in parameter.choices
    if isinstance(parameter, Range):
        return parameter.low <= value <= parameter.high
    return parameter.value == value


def admit_baselines(space: SearchSpace) -> SearchSpace:
    """The space widened just enough for the baselines: their values join categorical choices and
    stretch ranges (the default batch sizes gain 5). A parameter the space fixes to another value
    cannot be widened without changing what the study means, so it is an error."""
    spec = dict(space.spec)
    for name, values in _required_values(space).items():
        parameter = space.parameters.get(name)
        if parameter is None:
            if any(value != getattr(DEFAULT_CONFIG, name) for value in values):
                spec[name] = list(values)
            continue
        if isinstance(parameter, Fixed):
            if any(value != parameter.value for value in values):
                shown = ", ".join(str(v) for v in values)
                raise SpaceError(
                    f"the search space fixes {name} to {parameter.value!r}, but the survey baselines need "
                    f"{name} {shown}; remove {name} from the space file or search over it"
                )
            continue
        if isinstance(parameter, Categorical):
            missing = [v for v in values if v not in parameter.choices]
            if missing:
                choices = list(parameter.choices) + missing
                if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
                    choices.sort()
                spec[name] = choices
            continue
        low, high = min([parameter.low, *values]), max([parameter.high, *values])
        if (low, high) != (parameter.low, parameter.high):
            widened = {"low": low, "high": high, "log": parameter.log}
            if parameter.step is not None:
                widened["step"] = parameter.step
            spec[name] = widened
    return SearchSpace(spec)


def check_admits_baselines(study_name: str, space: SearchSpace) -> None:
    """Raise if an existing study's space cannot take the baselines (it cannot be widened once
    trials exist: Optuna needs one distribution per parameter)."""
    for name, values in _required_values(space).items():
        parameter = space.parameters.get(name)
        if parameter is None:
            parameter = Fixed(getattr(DEFAULT_CONFIG, name))
        missing = [v for v in values if not _admits(parameter, v)]
        if missing:
            shown = ", ".join(str(v) for v in missing)
            raise StudyError(
                f"study {study_name!r} cannot hold the survey baselines: its search space does not admit "
                f"{name} {shown}; run `medsweep paper` on a new study name (it widens the space), or "
                f"create the study with a space file whose {name} includes {shown}"
            )


def baseline_params(space: SearchSpace, baseline: Baseline) -> dict[str, Any]:
    """The values to enqueue: the baseline's own, and the template's for searched head/augmentation fields."""
    params = dict(baseline.params)
    for name in TEMPLATE_FIELDS:
        if name in space.parameters and not isinstance(space.parameters[name], Fixed):
            params[name] = getattr(DEFAULT_CONFIG, name)
    return {name: value for name, value in params.items()
            if name in space.parameters and not isinstance(space.parameters[name], Fixed)}


def enqueue_baselines(study: optuna.Study, space: SearchSpace) -> list[str]:
    """Enqueue the baselines the study does not hold yet (running `paper` twice adds nothing);
    returns the labels enqueued."""
    check_admits_baselines(study.study_name, space)
    present = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)}
    enqueued = []
    for baseline in survey_baselines():
        if baseline.label in present:
            continue
        study.enqueue_trial(baseline_params(space, baseline), user_attrs={BASELINE_ATTR: baseline.label})
        enqueued.append(baseline.label)
    return enqueued


class BaselineSparingPruner(optuna.pruners.BasePruner):
    """Never prunes a baseline trial: the survey's runs are the yardstick, so each trains its
    full epoch count; every other trial goes to the study's own pruner."""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.user_attrs.get(BASELINE_ATTR):
            return False
        return self.pruner.prune(study, trial)


class BaselineSparingHyperband(optuna.pruners.HyperbandPruner):
    """Hyperband that never prunes a baseline trial. A subclass rather than a wrapper, because
    Optuna's samplers look for Hyperband by type to sample within its brackets."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.user_attrs.get(BASELINE_ATTR):
            return False
        return super().prune(study, trial)


def spare_baselines(pruner: optuna.pruners.BasePruner) -> optuna.pruners.BasePruner:
    """`pruner`, made to let baseline trials run to the end."""
    if isinstance(pruner, optuna.pruners.NopPruner):
        return pruner
    if isinstance(pruner, optuna.pruners.HyperbandPruner):
        from ._study import HYPERBAND_SETTINGS

        return BaselineSparingHyperband(**HYPERBAND_SETTINGS)
    return BaselineSparingPruner(pruner)


@dataclass
class PaperResult:
    study: optuna.Study
    created: bool
    enqueued: list[str]


def run_paper(storage: Any, name: str, *, data_dir: str | None, space: SearchSpace | None = None,
              metric: str = "auc", pruner: str = "median") -> PaperResult:
    """Put the survey's ten configurations first in a study, creating the study (with the space
    widened for them) when it does not exist; an existing study keeps its own space."""
    from pathlib import Path

    from objectives import DataSpec, ImageDataset

    from ._study import create_study, load_study, study_exists

    if study_exists(storage, name):
        study, settings = load_study(storage, name)
        return PaperResult(study, False, enqueue_baselines(study, settings.search_space))
    if not data_dir:
        raise StudyError(f"study {name!r} does not exist yet; pass --data DIR to create it on a data folder")
    widened = admit_baselines(space or SearchSpace.default())
    dataset = ImageDataset.open(DataSpec(str(Path(data_dir).expanduser().resolve())))
    dataset.check_decodable()
    study = create_study(storage, name, dataset, widened, metric=metric, pruner=pruner)
    return PaperResult(study, True, enqueue_baselines(study, widened))
