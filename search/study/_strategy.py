"""How a study samples and prunes: the TPE sampler, the pruners by name, and the wrappers that
let the survey baselines (`medsweep paper`) always train to the end."""

from __future__ import annotations

import warnings

import optuna

from .._errors import StudyError
from .._record import baseline_of

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
    """`pruner`, made to let baseline trials run to the end."""
    if isinstance(pruner, optuna.pruners.NopPruner):
        return pruner
    if isinstance(pruner, optuna.pruners.HyperbandPruner):
        return BaselineSparingHyperband(**HYPERBAND_SETTINGS)
    return BaselineSparingPruner(pruner)
