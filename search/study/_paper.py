"""`medsweep paper`: the survey's ten configurations (five backbones x {lr 1e-4 for 20 epochs,
lr 1e-5 for 40 epochs}, batch size 5, the template's head and augmentation) enqueued as a
study's first trials, marked with the `baseline` user attribute, so the search that follows
is measured against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from medsweep.objectives import DEFAULT_CONFIG
from medsweep.objectives.images import DataSpec

from .._errors import SpaceError, StudyError
from .._record import BASELINE, baseline_of
from ._data import describe_dataset
from ._intensity import apply_intensity
from ._space import DEFAULT_SPACE, SURVEY_BACKBONES, Categorical, Fixed, Range, SearchSpace
from ._study import create_study, load_study, study_exists

BASELINE_ATTR = BASELINE  # kept for importers of the old name
SURVEY_SETTINGS = ((1e-4, 20), (1e-5, 40))  # (learning rate, epochs): the template and the "improved" run
SURVEY_BATCH_SIZE = 5
# The template's head and augmentation: a searched parameter among these is pinned to the template value.
TEMPLATE_FIELDS = ("dense_units", "dropout", "augmentation", "fine_tune_fraction", "frozen_warmup_epochs",
                   "augmented_views", "backbone_lr_factor")


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
        if isinstance(parameter, Fixed) and space.spec.get(name) == DEFAULT_SPACE.get(name, object()):
            # The default space's own fixed value (augmented_views), not the user's: the template
            # augments on the fly, so the baselines need the other value beside it.
            if any(value != parameter.value for value in values):
                spec[name] = sorted({parameter.value, *values})
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
    present = {baseline_of(t) for t in study.get_trials(deepcopy=False)}
    enqueued = []
    for baseline in survey_baselines():
        if baseline.label in present:
            continue
        study.enqueue_trial(baseline_params(space, baseline), user_attrs={BASELINE: baseline.label})
        enqueued.append(baseline.label)
    return enqueued


@dataclass
class PaperResult:
    study: optuna.Study
    created: bool
    enqueued: list[str]
    data: str = ""  # what `create` would say about the data, for a study created here
    intensity_note: str | None = None  # `create`'s grey-level warning, for a study created here


def run_paper(storage: Any, name: str, *, data: DataSpec | None, space: SearchSpace | None = None,
              metric: str = "auc", pruner: str = "median", intensity: str | None = None) -> PaperResult:
    """Put the survey's ten configurations first in a study, creating the study (with the space
    widened for them, and the same data, splits and folds `create` would use) when it does not
    exist; an existing study keeps its own space and data."""
    from medsweep.objectives.images import ImageDataset

    if study_exists(storage, name):
        study, settings = load_study(storage, name)
        if data is not None:
            _check_same_data(name, settings.data, data)
        return PaperResult(study, False, enqueue_baselines(study, settings.search_space))
    if data is None:
        raise StudyError(f"study {name!r} does not exist yet; pass --data DIR (or --manifest FILE.csv) to create it")
    dataset = ImageDataset.open(data)
    # The same grey-level verdict `create` gives (an --intensity choice joins the space).
    space, note = apply_intensity(dataset.check_decodable(), space or SearchSpace.default(), intensity)
    widened = admit_baselines(space)
    study = create_study(storage, name, dataset, widened, metric=metric, pruner=pruner)
    return PaperResult(study, True, enqueue_baselines(study, widened), describe_dataset(dataset), note)


def _check_same_data(name: str, stored: DataSpec, asked: DataSpec) -> None:
    """Data options for an existing study must describe its data: the baselines are judged on
    the study's own splits, which a different option would silently not change."""
    stored_values, asked_values = stored.to_dict(), asked.to_dict()
    differ = [key for key in asked_values if asked_values[key] != stored_values.get(key)]
    if differ:
        def shown(values: dict[str, Any]) -> str:
            return " ".join(f"--{key.replace('_', '-')} {values.get(key)}" for key in differ)

        raise StudyError(
            f"study {name!r} was created with {shown(stored_values)}, not {shown(asked_values)}; its data and "
            "splits are fixed, so leave out the data options or use a new study name"
        )
