"""How a study samples and prunes: the TPE sampler, the pruners by name, and the wrappers that
let the survey baselines (`medsweep paper`) always train to the end and judge each trial only
against trials of its own stage."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._errors import StudyError
from .._record import baseline_of, stage_of

PRUNERS = ("median", "hyperband", "none")
HYPERBAND_SETTINGS = {"min_resource": 1, "reduction_factor": 3}


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """MedianPruner stops a trial below the median of earlier trials at the same epoch; it
    waits for 2 finished trials and 1 epoch, because medical studies are short and costly."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**HYPERBAND_SETTINGS)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")


def make_sampler(seed: int | None = None) -> optuna.samplers.BaseSampler:
    """TPE with constant liar, so parallel workers do not all sample near the same point;
    multivariate over groups of parameters that occur together, since fine-tuning trials ask
    for parameters frozen ones do not (`SearchSpace.suggest`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=5)


class _StageView:
    """The study as a pruner sees it, holding only the trials `keep` accepts (Optuna's pruners read
    a study through `get_trials`, `trials` and `direction` alone)."""

    def __init__(self, study: optuna.Study, keep: Callable[[FrozenTrial], bool]) -> None:
        self._study = study
        self._keep = keep

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if self._keep(t)]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class StageAwarePruner(optuna.pruners.BasePruner):
    """Judges a trial only against trials of its own stage (frozen head, partial or full
    fine-tune: `fine_tune_fraction` 0, between, 1) at the same step.

    A fine-tune's first epochs score below a frozen head's (the backbone is still moving, and
    its warm-up epochs are not reported), and cross-validated trials report the running mean
    after each fold. Compared with every trial, the median pruner cut nearly every fine-tune
    after its second epoch on a single validation split, although those that survived beat the
    frozen heads. Within a stage the pruner's own rules apply, startup trials included: the
    first `n_startup_trials` trials of each stage are never pruned."""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        stage = stage_of(trial)
        view = _StageView(study, lambda other: stage_of(other) == stage)
        return self.pruner.prune(view, trial)  # type: ignore[arg-type]


class BaselineSparingPruner(optuna.pruners.BasePruner):
    """Never prunes a baseline trial: the survey's runs are the yardstick, so each trains its
    full epoch count; every other trial goes to the study's own pruner."""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if baseline_of(trial):
            return False
        return self.pruner.prune(study, trial)


class BaselineSparingHyperband(optuna.pruners.HyperbandPruner):
    """Hyperband that never prunes a baseline trial. A subclass rather than a wrapper, because
    Optuna's samplers look for Hyperband by type to sample within its brackets."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if baseline_of(trial):
            return False
        return super().prune(study, trial)


def spare_baselines(pruner: optuna.pruners.BasePruner) -> optuna.pruners.BasePruner:
    """`pruner`, made to let baseline trials run to the end and (but Hyperband) to compare each
    trial with its own stage only."""
    if isinstance(pruner, optuna.pruners.NopPruner):
        return pruner
    if isinstance(pruner, optuna.pruners.HyperbandPruner):
        # Hyperband's brackets are studies of their own, built inside Optuna; it is not made
        # stage-aware (docs/search-strategy.md says so and recommends the median pruner).
        return BaselineSparingHyperband(**HYPERBAND_SETTINGS)
    return BaselineSparingPruner(StageAwarePruner(pruner))
