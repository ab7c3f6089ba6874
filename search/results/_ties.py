"""Ties made visible: which completed trials cannot be told apart from the best one (a paired,
corrected resampled t-test over their shared cross-validation folds), for `status`, `report`
and `export` (with `--prefer cheapest`); no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from optuna.trial import FrozenTrial, TrialState

from medsweep.objectives.metrics import TIE_TEST, describe_ties, trials_within_noise

from .._errors import MedsweepError
from .._record import epochs_trained, fold_scores, validation_share

TIE_ALPHA = 0.05
PREFERENCES = ("best", "cheapest")


@dataclass
class Ties:
    """The best trial, the trials within noise of it (number -> p-value) and why none could be
    compared when `reason` is set (single-split study, fewer than two folds)."""

    best: int | None
    within: dict[int, float] = field(default_factory=dict)
    reason: str = ""

    def describe(self) -> str:
        """E.g. '7 trials within noise of the best (corrected resampled t-test ..., alpha 0.05)'."""
        if self.reason:
            return f"ties not tested: {self.reason}"
        return f"{describe_ties(len(self.within))} (trial {self.best}; {TIE_TEST}, alpha {TIE_ALPHA})"

    def section(self) -> dict[str, object]:
        """The export's `ties` section."""
        if self.reason:
            return {"tested": False, "reason": self.reason}
        return {"tested": True, "best_trial": self.best, "test": TIE_TEST, "alpha": TIE_ALPHA,
                "within_noise": {int(n): round(p, 4) for n, p in self.within.items()},
                "summary": describe_ties(len(self.within))}


def find_ties(trials: Sequence[FrozenTrial], direction: str, alpha: float = TIE_ALPHA) -> Ties:
    """Compare every completed cross-validated trial with the best one on their shared folds."""
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not completed:
        return Ties(None, reason="no completed trial yet")
    pick = max if direction == "maximize" else min
    best = pick(completed, key=lambda t: t.value)
    best_folds = fold_scores(best)
    share = validation_share(best)
    if best_folds is None or len(best_folds) < 2 or share is None:
        return Ties(best.number, reason="the study is not cross-validated; create it with --cv K to compare trials fold by fold")
    others = {t.number: fold_scores(t) for t in completed if t.number != best.number}
    comparable = {n: s for n, s in others.items() if s is not None and len(s) == len(best_folds)}
    return Ties(best.number, trials_within_noise(best_folds, comparable, share, alpha=alpha))


def trial_cost(trial: FrozenTrial) -> float:
    """What a trial cost to train: its wall-clock seconds, else its epochs (records without times)."""
    if trial.duration is not None:
        return trial.duration.total_seconds()
    return float(epochs_trained(trial))


def preferred_trial(trials: Sequence[FrozenTrial], direction: str, prefer: str) -> tuple[FrozenTrial, Ties]:
    """The trial `export --prefer` picks: the best, or the cheapest of the best and its ties."""
    if prefer not in PREFERENCES:
        raise MedsweepError(f"--prefer {prefer!r} is not one of {', '.join(PREFERENCES)}; pass e.g. --prefer cheapest")
    ties = find_ties(trials, direction)
    by_number = {t.number: t for t in trials}
    if ties.best is None:
        raise MedsweepError("the study has no completed trial yet; run `medsweep worker` first")
    if prefer == "best":
        return by_number[ties.best], ties
    if ties.reason:
        raise MedsweepError(f"--prefer cheapest needs ties to choose from, but {ties.reason}")
    from medsweep.objectives.metrics import cheapest

    candidates = [ties.best, *ties.within]
    chosen = cheapest(candidates, {n: trial_cost(by_number[n]) for n in candidates})
    return by_number[chosen], ties
