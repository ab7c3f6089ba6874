"""`medsweep status`: a table of a study's trials and its best so far."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from .._record import STAGE, cv_interval, epochs_trained, fail_reason_of, retry_history, stopped_by_of
from ._ties import Ties, find_ties


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _interval(trial: optuna.trial.FrozenTrial) -> str:
    """A cross-validated trial's 95% interval and fold count, e.g. `[0.71, 0.83] 10 folds`."""
    interval = cv_interval(trial)
    if interval is None:
        return ""
    low, high, folds = interval
    return f"[{low:.3f}, {high:.3f}] {folds} folds"


def trial_rows(study: optuna.Study, ties: Ties | None = None,
               trials: list[optuna.trial.FrozenTrial] | None = None) -> list[dict[str, str]]:
    """One row of strings per trial, in trial order; `ties` marks the best and its ties (computed
    on the same `trials`, so a trial finishing meanwhile cannot split the table from its marks)."""
    rows = []
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    ties = ties or Ties(None)
    # A trial a worker lost (killed, stopped) is retried as a later trial: say which one.
    retried_as = {retry_history(t)[-1]: t.number for t in trials if retry_history(t)}
    for trial in trials:
        duration = trial.duration.total_seconds() if trial.duration else None
        epochs = epochs_trained(trial)
        note = (fail_reason_of(trial) if trial.state == TrialState.FAIL
                else stopped_by_of(trial) if trial.state == TrialState.PRUNED else "")
        if trial.number in retried_as:
            note = f"{note}; retried as trial {retried_as[trial.number]}" if note else f"retried as trial {retried_as[trial.number]}"
        rows.append({
            "trial": str(trial.number),
            "state": trial.state.name,
            "stage": str(trial.user_attrs.get(STAGE) or ""),  # a budgeted search's stage (column dropped otherwise)
            "value": "" if trial.value is None else f"{trial.value:.4f}",
            "95% CI": _interval(trial),
            "tie": "best" if trial.number == ties.best and not ties.reason and ties.within
            else (f"~best p={ties.within[trial.number]:.2f}" if trial.number in ties.within else ""),
            "epochs": str(epochs) if epochs else "",
            "seconds": "" if duration is None else f"{duration:.1f}",
            "params": " ".join(f"{k}={_format_value(v)}" for k, v in trial.params.items()),
            "note": note,
        })
    return rows


# Columns that go onto lines of their own under each trial when one line per trial would not
# fit the terminal: they are long and of any length, the others are short and bounded.
_WRAPPED = ("params", "note")
STATUS_WIDTH = 80  # when the output is no terminal and $COLUMNS is unset


def _table_lines(rows: list[dict[str, str]], columns: list[str]) -> list[str]:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return lines


def format_table(rows: list[dict[str, str]], width: int | None = None) -> str:
    """The trial table, one line per trial; when that is wider than `width`, each trial's
    params and note go on indented lines under it, wrapped to `width`."""
    import textwrap

    if not rows:
        return "(no trials yet)"
    columns = [c for c in rows[0] if any(r[c] for r in rows) or c in ("trial", "state")]
    lines = _table_lines(rows, columns)
    if width is None or max(map(len, lines)) <= width:
        return "\n".join(lines)
    short = [c for c in columns if c not in _WRAPPED]
    indent = " " * (max(len("trial"), *(len(r["trial"]) for r in rows)) + 2)
    head, *body = _table_lines(rows, short)
    wrapped = [c for c in columns if c in _WRAPPED]
    out = [head, indent + "; ".join(wrapped)]

    def wrap(text: str) -> list[str]:
        return textwrap.wrap(text, max(20, width - len(indent)), break_on_hyphens=False) or [""]

    for row, line in zip(rows, body):
        out.append(line)
        if row.get("params"):
            out += [indent + part for part in wrap(row["params"])]
        if row.get("note"):
            out += [indent + part for part in wrap(f"note: {row['note']}")]
    return "\n".join(out)


def status_report(study: optuna.Study, metric: str, storage: Any = None, width: int | None = None) -> str:
    """The trial table, counts by state and the best trial so far (and, given the `storage` the
    study was loaded from, the wall budget left), fitted to `width` columns (default: the
    terminal's, or $COLUMNS, or 80)."""
    import shutil
    import textwrap

    if width is None:
        width = shutil.get_terminal_size((STATUS_WIDTH, 24)).columns
    # One read of the trials for the table, the marks and the best line: workers may be writing.
    trials = study.get_trials(deepcopy=False)
    ties = find_ties(trials, study.direction.name.lower())
    rows = trial_rows(study, ties, trials)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "no trials"
    lines = [f"study {study.study_name}: {summary}", format_table(rows, width)]
    if ties.best is not None:
        best = next(t for t in trials if t.number == ties.best)
        params = ", ".join(f"{k}={_format_value(v)}" for k, v in best.params.items())
        interval = _interval(best)
        interval = f", 95% CI {interval}" if interval else ""
        sentences = [f"best: trial {best.number}, {metric} {best.value:.4f}{interval} ({params})"]
        if not ties.reason:
            sentences.append(ties.describe())
        for sentence in sentences:
            lines += textwrap.wrap(sentence, max(20, width), subsequent_indent="  ", break_on_hyphens=False)
    from ..workers._plan import plan_lines  # budget, stages and the backbone ranking, when there are any

    lines += plan_lines(study, storage)
    return "\n".join(lines)
