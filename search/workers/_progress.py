"""What a worker shows while it runs: trials done of the study's budget, the current trial's
epoch, the best value so far and an ETA. A live rich line on a terminal, plain log lines
otherwise (or when several workers share one terminal), nothing but warnings with `quiet`."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._record import fail_reason_of



def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class StudyProgress:
    """A snapshot of the whole study (all workers), computed from the storage."""

    done: int
    budget: int | None
    running: int
    best_value: float | None
    best_number: int | None
    eta_seconds: float | None

    def describe(self) -> str:
        parts = [f"{self.done}/{self.budget} done" if self.budget else f"{self.done} done"]
        if self.best_value is not None:
            parts.append(f"best {self.best_value:.4f} (trial {self.best_number})")
        if self.eta_seconds is not None:
            parts.append(f"ETA {format_seconds(self.eta_seconds)}")
        return " | ".join(parts)


def study_progress(study: optuna.Study, budget: int | None) -> StudyProgress:
    """Done of budget, best so far, and an ETA: the mean duration of finished trials times the
    trials left, shared among the trials running now (one per worker). One storage read."""
    from ._budget import counts_towards_budget, retried_numbers

    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    finished = [t for t in trials if t.state.is_finished() and counts_towards_budget(t, retried)]
    running = sum(t.state == TrialState.RUNNING for t in trials)
    durations = [t.duration.total_seconds() for t in finished if t.duration is not None]
    completed = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    best: FrozenTrial | None = None
    if completed:
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = pick(completed, key=lambda t: t.value)
    eta = None
    if budget is not None and durations:
        left = max(0, budget - len(finished))
        eta = left * (sum(durations) / len(durations)) / max(1, running)
    return StudyProgress(len(finished), budget, running, None if best is None else best.value,
                         None if best is None else best.number, eta)


class Progress:
    """Prints worker events; `mode` is "rich", "plain" or "quiet"."""

    def __init__(self, mode: str = "plain", label: str = "", stream: TextIO | None = None) -> None:
        self.mode = mode
        self.prefix = f"[{label}] " if label else ""
        self.folds = 0  # folds per trial when the study cross-validates (each fold is one fit)
        self._fold = 0
        self.stream = stream or sys.stderr
        self._live: Any = None
        self._task: Any = None
        self._trial: int | None = None
        self._trial_started = 0.0
        self._summary = ""

    @classmethod
    def choose(cls, quiet: bool, label: str = "", stream: TextIO | None = None, shared: bool = False) -> "Progress":
        """rich on a terminal, plain lines otherwise or when several workers share the output
        (`shared`); every line starts with the worker's label."""
        stream = stream or sys.stderr
        if quiet:
            return cls("quiet", label, stream)
        if not shared and stream.isatty():
            return cls("rich", label, stream)
        return cls("plain", label, stream)

    def _line(self, text: str) -> None:
        if self.mode == "quiet":
            return
        if self._live is not None:
            self._live.console.print(self.prefix + text, highlight=False, markup=False)
        else:
            print(f"{time.strftime('%H:%M:%S')} {self.prefix}{text}", file=self.stream, flush=True)

    def _status(self, text: str, completed: int | None = None, total: int | None = None) -> None:
        if self.mode != "rich":
            return
        if self._live is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self._live = RichProgress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}", markup=False),
                                      console=Console(file=self.stream), transient=False)
            self._live.start()
            self._task = self._live.add_task("trials", total=total, status="")
        updates: dict[str, Any] = {"status": self.prefix + text}
        if completed is not None:
            updates["completed"] = completed
        if total is not None:
            updates["total"] = total
        self._live.update(self._task, **updates)

    def warning(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(self.prefix + "warning: " + text, highlight=False, markup=False)
        else:
            print(f"{time.strftime('%H:%M:%S')} {self.prefix}warning: {text}", file=self.stream, flush=True)

    def trial_started(self, number: int, params: dict[str, Any], snapshot: StudyProgress, retry_of: int | None) -> None:
        self._trial, self._trial_started, self._fold = number, time.monotonic(), 0
        self._summary = snapshot.describe()
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        again = f" (retry of trial {retry_of})" if retry_of is not None else ""
        self._status(f"trial {number} starting | {self._summary}", snapshot.done, snapshot.budget)
        self._line(f"trial {number} started{again}" + (f": {shown}" if shown else ""))

    def fit_started(self) -> None:
        self._fold += 1

    def epoch(self, epoch: int, epochs: int | None, logs: dict[str, Any]) -> None:
        measured = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k.startswith("val_") and isinstance(v, float))
        of = f"/{epochs}" if epochs else ""
        fold = f" fold {self._fold}/{self.folds}" if self.folds and self._fold else ""
        where = f"trial {self._trial}{fold} epoch {epoch}{of}"
        if self.mode == "rich":  # one line: keep it short enough for the bar to stay
            brief = " ".join(f"{k} {logs[k]:.4f}" for k in ("val_auc", "val_accuracy") if isinstance(logs.get(k), float))
            self._status(f"{where} {brief or measured} | {self._summary}")
        else:
            self._line(f"{where} {measured}".rstrip())

    def trial_finished(self, trial: FrozenTrial, snapshot: StudyProgress, note: str = "") -> None:
        seconds = time.monotonic() - self._trial_started
        value = "" if trial.value is None else f" {trial.value:.4f}"
        reason = (fail_reason_of(trial) or None) if trial.state == TrialState.FAIL else None
        text = f"trial {trial.number} {trial.state.name.lower()}{value} in {format_seconds(seconds)}"
        if note or reason:
            text += f" ({note or reason})"
        self._summary = snapshot.describe()
        self._line(f"{text} | {self._summary}")
        self._status(f"{self._summary}", snapshot.done, snapshot.budget)

    def waiting(self, running: int) -> None:
        text = f"budget used up; waiting for {running} running trial(s) of other workers to finish or be retried"
        self._line(text)
        self._status(text)

    def message(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
