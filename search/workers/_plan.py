"""The staged plan of a budgeted search: spend the study's wall budget from cheap trials to
expensive ones.

Stage "frozen" (the first 10% of the budget) trains heads on cached features; stage "partial"
(to 40%) trains the top of the backbone after a frozen warm-up of the head; stage "full" (the
rest) trains every layer. Entering a stage promotes the best third of the previous stage's
completed configurations (successive halving), queued with `enqueue_trial`; after them, Optuna's
TPE samples the free parameters with the stage's depth fixed. Every decision is a pure function
of the stored trials, the deadline and the clock, so any worker, restarted or on another
machine, continues the same plan. Callers hold the study's budget lock while deciding and
enqueueing, so two workers never promote the same configuration twice."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from optuna.trial import FrozenTrial, TrialState

from ..study._space import FINE_TUNING_ONLY, Categorical, Fixed, Range, SearchSpace
from ._budget import WallBudget

# Where each stage's share of the wall budget ends (10% / 30% / 60%): the full stage, where the
# best trials were, gets the most, so that even 5-fold cross-validated full fine-tunes (8 to 13
# minutes each on two CPU cores) complete more than one in a 30-minute budget.
STAGE_ENDS = {"frozen": 0.10, "partial": 0.40, "full": 1.0}
PARTIAL_FRACTION = 0.3  # share of backbone layers, from the top, a "partial" trial trains
STAGE_FRACTION = {"frozen": 0.0, "partial": PARTIAL_FRACTION, "full": 1.0}
# Before a stage's first trial finishes, its seconds per epoch and fold are the cheaper stage's
# times this: measured on this 2-core CPU, MobileNet alpha 0.25 at 224 px (partial: the top 30% on
# the cut-point cache, against a frozen head on cached features; full: every layer live, against a
# partial one); see docs/search-strategy.md. Replaced by measurement as soon as one trial of the
# stage finishes (pruned ones count).
FIRST_COST_RATIO = {"frozen": 1.0, "partial": 40.0, "full": 6.0}  # full: 3x at batch 4, 8x at batch 32
KEEP_SHARE = 1 / 3  # successive halving: the best third of a stage earns the next one
MAX_PROMOTED = {"partial": 6, "full": 3}  # bounds the queue when the cheap stage ran many trials

from .._record import PROMOTED_FROM, STAGE, STAGES, config_of, epochs_trained, fold_scores, stage_of  # noqa: E402

# Study user attribute holding the transferability ranking of the candidate backbones.
TRANSFERABILITY = "transferability"
RANKED_KEYS = ("backbone", "weights", "image_size")
MAX_RANKED_CANDIDATES = 24


def _allows(parameter: Any, value: Any) -> bool:
    if isinstance(parameter, Categorical):
        return value in parameter.choices
    if isinstance(parameter, Range):
        return parameter.low <= value <= parameter.high
    return False


def _unit_seconds(trial: FrozenTrial) -> float | None:
    """A finished trial's seconds per trained epoch and fold."""
    seconds = _seconds(trial)
    epochs = epochs_trained(trial)
    if seconds is None or epochs <= 0:
        return None
    return seconds / (epochs * max(1, len(fold_scores(trial) or ())))


def _study_folds(trials: Sequence[FrozenTrial]) -> int:
    """Folds per trial: the most any trial recorded (1 without cross-validation)."""
    return max((len(fold_scores(t) or ()) for t in trials), default=0) or 1


def _typical_epochs(trials: Sequence[FrozenTrial]) -> int | None:
    """The median epoch count the study's trials were given (the next trial's is unknown until sampled)."""
    epochs = [e for t in trials if isinstance(e := config_of(t).get("epochs"), int)]
    return int(statistics.median(epochs)) if epochs else None


def _seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


@dataclass
class Decision:
    """What the next trial is: its stage, the parameters fixed for it, the promotions to queue
    first, or why no trial should start."""

    stage: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    promotions: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    stop: str = ""
    expected_seconds: float | None = None


class StagePlan:
    """Decides each new trial's stage from the study's trials and the wall budget."""

    def __init__(self, space: SearchSpace | None, direction: str, budget: WallBudget | None,
                 shortlist: Sequence[dict[str, Any]] = ()) -> None:
        self.space = space
        self.direction = direction
        self.budget = budget
        parameters = space.parameters if space is not None else {}
        depth = parameters.get("fine_tune_fraction")
        self.stages = tuple(s for s in STAGES if depth is not None and _allows(depth, STAGE_FRACTION[s]))
        # Staging needs a budget to divide and a space that lets the depth vary from frozen to full.
        self.staged = budget is not None and {"frozen", "full"} <= set(self.stages)
        searched = {k for k in RANKED_KEYS if isinstance(parameters.get(k), Categorical)}
        self.shortlist = [{k: v for k, v in row.items() if k in searched and _allows(parameters[k], v)}
                          for row in shortlist]
        self.shortlist = [row for row in self.shortlist if row]

    def planned_stage(self, now: float, trials: Sequence[FrozenTrial] = ()) -> str:
        """The stage the budget's spent share points at, but never beyond the first stage without
        a completed trial: a stage must have a result before its successor has anything to promote."""
        share = self.budget.spent_share(now) if self.budget else 0.0
        completed = {stage_of(t) for t in trials if t.state == TrialState.COMPLETE}
        for stage in self.stages:
            if share < STAGE_ENDS[stage] or stage not in completed:
                return stage
        return self.stages[-1]

    def expected_seconds(self, stage: str | None, trials: Sequence[FrozenTrial]) -> float | None:
        """What the next trial of `stage` should cost: the median duration of the stage's completed
        trials (but the first, once there are more); for a stage none of which completed yet, its
        seconds per epoch and fold (`unit_seconds`) times the typical epochs and the folds, else the
        dearest cheaper stage's median (a lower bound); None when nothing is known."""
        def median(of: str | None) -> float | None:
            done = sorted((t for t in trials if t.state == TrialState.COMPLETE and (of is None or stage_of(t) == of)
                           and _seconds(t) is not None), key=lambda t: t.number)
            # The first trial of a stage fills the feature cache (266 s against seconds for the next
            # frozen trials on brain_mri at 224 px): once others finished, it does not count.
            durations = [_seconds(t) for t in (done[1:] if len(done) > 1 else done)]
            return statistics.median(durations) if durations else None

        own = median(stage)
        if own is not None or stage is None:
            return own
        scaled = self.trial_seconds(stage, _typical_epochs(trials), trials)
        if scaled is not None:
            return scaled
        # No epochs recorded to scale by: the dearest cheaper stage's median, a lower bound.
        cheaper = [m for s in STAGES[:STAGES.index(stage)] if (m := median(s)) is not None]
        return max(cheaper) if cheaper else None

    def unit_seconds(self, stage: str, trials: Sequence[FrozenTrial]) -> float | None:
        """Seconds a trial of `stage` spends per epoch and fold: measured on the stage's finished
        trials (complete or pruned: a pruned trial's epochs cost as much), else the dearest cheaper
        stage's, scaled by FIRST_COST_RATIO; None before any trial finished."""
        def measured(of: str) -> float | None:
            done = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                           and stage_of(t) == of), key=lambda t: t.number)
            units = [u for t in (done[1:] if len(done) > 1 else done) if (u := _unit_seconds(t)) is not None]
            return statistics.median(units) if units else None

        own = measured(stage)
        if own is not None:
            return own
        position = STAGES.index(stage)
        for cheaper in reversed(STAGES[:position]):
            unit = measured(cheaper)
            if unit is not None:
                for step in STAGES[STAGES.index(cheaper) + 1:position + 1]:
                    unit *= FIRST_COST_RATIO[step]
                return unit
        return None

    def trial_seconds(self, stage: str, epochs: int | None, trials: Sequence[FrozenTrial]) -> float | None:
        """What a trial of `stage` with `epochs` epochs should cost, at the study's folds."""
        unit = self.unit_seconds(stage, trials)
        if unit is None or not epochs:
            return None
        return unit * epochs * _study_folds(trials)

    def decide(self, trials: Sequence[FrozenTrial], now: float | None = None) -> Decision:
        """The next trial's stage and fixed parameters, the promotions to queue, or a stop reason."""
        now = time.time() if now is None else now
        left = self.budget.left(now) if self.budget else math.inf
        if left <= 0:
            return Decision(stop=f"the study's {self.budget.seconds:g} s wall budget is spent")
        if not self.staged:
            expected = self.expected_seconds(None, trials)
            if expected is not None and expected > left:
                return Decision(stop=f"{left:.0f} s of the budget left, under the {expected:.0f} s a trial takes")
            return Decision(expected_seconds=expected, fixed=self._candidate(trials, None))
        planned = self.planned_stage(now, trials)
        # The planned stage if a trial of it fits in the time left, else the dearest cheaper one that does.
        for stage in reversed(self.stages[:self.stages.index(planned) + 1]):
            expected = self.expected_seconds(stage, trials)
            if expected is None or expected <= left:
                break
        else:
            return Decision(stop=f"{left:.0f} s of the budget left, under the {expected:.0f} s even the "
                                 f"cheapest trial takes")
        fixed = {"fine_tune_fraction": STAGE_FRACTION[stage], **self._candidate(trials, stage)}
        promotions = self.promotions(stage, trials) if stage == planned else []
        return Decision(stage, fixed, promotions, expected_seconds=expected)

    def cannot_finish(self, trial: FrozenTrial, trials: Sequence[FrozenTrial], now: float | None = None) -> str | None:
        """Why a queued promotion, just taken by `ask`, should not start (None: start it): it can
        no longer finish in the budget left and would only be cut at the deadline. Its cost is its
        own epochs at its stage's seconds per epoch and fold, so a long promotion is judged by its
        length, not by the stage's typical trial. Retries of interrupted trials always run: they
        keep the trial budget exact."""
        if not self.staged or PROMOTED_FROM not in trial.user_attrs:
            return None
        left = self.budget.left(time.time() if now is None else now)
        stage = trial.user_attrs.get(STAGE)
        if left <= 0:
            return "not started: the study's wall budget was spent"
        # Just asked, a queued promotion has suggested nothing yet: its epochs are its source's
        # (a promotion copies the source trial's parameters and changes only the depth).
        source = next((t for t in trials if t.number == trial.user_attrs[PROMOTED_FROM]), None)
        epochs = trial.params.get("epochs", source.params.get("epochs") if source is not None else None)
        expected = self.trial_seconds(stage, epochs, trials) if isinstance(epochs, int) else None
        if expected is None:
            expected = self.expected_seconds(stage, trials)
        if expected is not None and expected > left:
            return f"not started: {left:.0f} s of the budget left, under the {expected:.0f} s a {stage} trial takes"
        return None

    def _candidate(self, trials: Sequence[FrozenTrial], stage: str | None) -> dict[str, Any]:
        """Round robin over the transferability shortlist, so every shortlisted backbone gets its share."""
        if not self.shortlist:
            return {}
        count = sum(1 for t in trials if stage is None or stage_of(t) == stage)
        return dict(self.shortlist[count % len(self.shortlist)])

    def promotions(self, stage: str, trials: Sequence[FrozenTrial]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The best third of the previous stage's completed configurations not promoted yet, as
        (params, user_attrs) for `enqueue_trial`."""
        position = self.stages.index(stage)
        if position == 0:
            return []
        previous = self.stages[position - 1]
        done = [t for t in trials if t.state == TrialState.COMPLETE and stage_of(t) == previous and t.value is not None]
        done.sort(key=lambda t: t.value, reverse=self.direction == "maximize")
        keep = min(max(1, math.ceil(len(done) * KEEP_SHARE)), MAX_PROMOTED.get(stage, 3)) if done else 0
        promoted = {t.user_attrs.get(PROMOTED_FROM) for t in trials}
        queue = []
        for source in done[:keep]:
            if source.number in promoted:
                continue
            params = dict(source.params)
            params["fine_tune_fraction"] = STAGE_FRACTION[stage]
            if previous == "frozen":
                # never sampled by a frozen trial (older studies did): TPE chooses them for the fine-tune
                for name in FINE_TUNING_ONLY:
                    params.pop(name, None)
            queue.append((params, {STAGE: stage, PROMOTED_FROM: source.number}))
        return queue


# ---------------------------------------------------------------------------------------------
# Transferability ranking of the candidate backbones, before any trial trains.


def ranking_candidates(space: SearchSpace) -> list[dict[str, Any]]:
    """Every (backbone, weights, image size) the space allows, with its other fixed values; empty
    when there is at most one candidate (nothing to rank)."""
    fixed = {name: p.value for name, p in space.parameters.items() if isinstance(p, Fixed)}
    choices = []
    for key in RANKED_KEYS:
        parameter = space.parameters.get(key)
        choices.append(list(parameter.choices) if isinstance(parameter, Categorical) else [fixed.get(key)])
    combos = [dict(zip(RANKED_KEYS, values)) for values in itertools.product(*choices)]
    if len(combos) <= 1 or len(combos) > MAX_RANKED_CANDIDATES:
        return []
    return [{**fixed, **{k: v for k, v in combo.items() if v is not None}} for combo in combos]


def rank_study_candidates(space: SearchSpace, dataset: Any, by: str = "logme") -> dict[str, Any] | None:
    """LogME of every candidate on cached pooled features and the shortlist worth the budget, as
    the study attribute `transferability` stores it; None when there is nothing to rank."""
    from medsweep.objectives import TrialConfig
    from medsweep.objectives.evaluation import rank_candidates, shortlist

    candidates = ranking_candidates(space)
    if not candidates:
        return None
    configs = [TrialConfig.from_dict(values) for values in candidates]
    rows = rank_candidates(configs, dataset, by=by)
    best = shortlist(rows, by=by)
    return {"by": by, "rows": [_plain(row.as_dict()) for row in rows],
            "shortlist": [{"backbone": r.config.backbone, "weights": r.config.weights,
                           "image_size": r.config.image_size} for r in best]}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values (NaN becomes None)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def ranking_rows(ranking: dict[str, Any] | None) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The stored ranking's header and rows as text (no rows when there is none)."""
    headers = ("rank", "candidate", "LogME", "probe AUC", "feature RMS", "searched")
    if not ranking or not ranking.get("rows"):
        return headers, []
    listed = {(r.get("backbone"), r.get("weights"), r.get("image_size")) for r in ranking.get("shortlist", [])}

    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [(str(i), str(r.get("name", "?")), number(r.get("logme"), ".3f"), number(r.get("linear_probe"), ".3f"),
             number(r.get("feature_rms"), ".1e"),
             "yes" if any(r.get("backbone") == b and r.get("weights") == w and (s is None or r.get("image_size") == s)
                          for b, w, s in listed) else "no")
            for i, r in enumerate(ranking["rows"], 1)]
    return headers, rows


def ranking_lines(ranking: dict[str, Any] | None) -> list[str]:
    """The stored ranking as a fixed-width table for `medsweep status` (empty when none)."""
    headers, rows = ranking_rows(ranking)
    if not rows:
        return []
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 1 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [f"transferability ({ranking.get('by', 'logme')} on cached features, before training):", line(headers),
            *(line(row) for row in rows)]


def promoted_count(trials: Iterable[FrozenTrial]) -> int:
    return sum(1 for t in trials if t.user_attrs.get(PROMOTED_FROM) is not None)


def prepare_plan(storage: Any, study: Any, settings: Any, dataset: Any, budget_seconds: float | None,
                 lock: Any) -> tuple[WallBudget | None, StagePlan]:
    """Start (or read) the study's wall budget and, for a staged search, rank the candidate
    backbones once for the whole study (under `lock()`, a fresh hold of the study's budget lock, so
    other workers wait for it and reuse it)."""
    from ._budget import wall_budget

    budget = wall_budget(storage, study, budget_seconds, lock)
    space = settings.search_space
    plan = StagePlan(space, settings.direction, budget)
    ranking = study.user_attrs.get(TRANSFERABILITY)
    if plan.staged and ranking is None and ranking_candidates(space):
        with lock():
            ranking = optuna_user_attrs(storage, study.study_name).get(TRANSFERABILITY)
            if ranking is None:
                ranking = rank_study_candidates(space, dataset) or {}
                study.set_user_attr(TRANSFERABILITY, ranking)
    if ranking:
        plan = StagePlan(space, settings.direction, budget, ranking.get("shortlist") or ())
    return budget, plan


def optuna_user_attrs(storage: Any, study_name: str) -> dict[str, Any]:
    """The study's user attributes as stored now (not as this process loaded them)."""
    return storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))


def plan_lines(study: Any, storage: Any = None) -> list[str]:
    """`medsweep status` lines on the budget (time left, when the `storage` the study was loaded
    from is given) and trials per stage, then the ranking."""
    from ._budget import read_wall_budget

    lines = []
    budget = read_wall_budget(storage, study.study_name) if storage is not None else None
    trials = study.get_trials(deepcopy=False)
    if budget is not None:
        left = budget.left()
        state = f"{left / 60:.1f} min left" if left > 0 else "spent"
        lines.append(f"wall budget: {budget.seconds / 60:g} min, {state}")
    stages = {s: sum(1 for t in trials if t.user_attrs.get(STAGE) == s) for s in STAGES}
    if any(stages.values()):
        lines.append("stages: " + ", ".join(f"{n} {s}" for s, n in stages.items())
                     + f" ({promoted_count(trials)} promoted)")
    return lines + ranking_lines(study.user_attrs.get(TRANSFERABILITY))
