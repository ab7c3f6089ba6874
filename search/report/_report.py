"""`medsweep report`: one self-contained HTML file (the plotly.js bundle inlined, so it opens
offline) with a study's summary, its survey baselines against the searched best, and its
figures; optionally each figure as a PNG (kaleido, which drives a Chrome/Chromium).

Studies of 10,000 trials stay fast: trials are read once; Optuna's model-based figures
(importances, parallel coordinates, slices) see a random sample of completed trials; learning
curves are drawn for a chosen subset, one plotly trace per group with gaps between trials."""

from __future__ import annotations

import datetime
import html
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._errors import MedsweepError
from .._overwrite import REPORT_FIGURE_PNG, REPORT_GENERATOR
from .._record import (backbone_of, baseline_of, config_of, cv_interval, epochs_planned, epochs_trained,
                       history_of, metrics_of, reliability_of, roc_curve_of)
from ..results._ties import find_ties
from ..study._study import StudySettings

MAX_MODEL_TRIALS = 1500  # completed trials given to parallel coordinates and slices
MAX_IMPORTANCE_TRIALS = 500  # fANOVA's cost grows fast with trials: 500 take ~3 s, 1500 ~10 s
MAX_CURVE_TRIALS = 150  # trials drawn in the learning-curve figure
SLICE_PARAMETERS = ("learning_rate", "epochs", "batch_size")
CURVE_PANELS = (("accuracy", "training accuracy"), ("val_accuracy", "validation accuracy"),
                ("loss", "training loss"), ("val_loss", "validation loss"))
STATE_COLOURS = {"complete": "#1f77b4", "pruned": "#ff7f0e", "baseline": "#2ca02c", "best": "#d62728"}
PNG_SCALE = 2
# Every figure the report draws, in order: `--png DIR` writes DIR/<key>.png for the drawn ones.
FIGURE_KEYS = ("history", "importances", "parallel", "slices", "backbones", "curves", "best_curves", "confusion",
               "roc", "reliability")


class ReportError(MedsweepError):
    """The report cannot be written (output path, PNG export)."""


@dataclass
class ReportFigure:
    key: str
    title: str
    figure: Any = None  # a plotly Figure, or None with `note` saying why it is missing
    note: str = ""


@dataclass
class Report:
    study_name: str
    summary_html: str
    baselines_html: str
    figures: list[ReportFigure]
    timings: dict[str, float] = field(default_factory=dict)
    examples_html: str = ""  # the Grad-CAM rows of `--model`, or a note why there are none


# ---------------------------------------------------------------------------------------------
# Summary and tables (the trial record is read through search._record)


def trial_hours(trial: FrozenTrial) -> float:
    return trial.duration.total_seconds() / 3600 if trial.duration else 0.0


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _value_text(trial: FrozenTrial) -> str:
    """The value, with the cross-validation interval when the trial has one."""
    if trial.value is None:
        return "—"
    text = f"{trial.value:.4f}"
    interval = cv_interval(trial)
    if interval is not None:
        low, high, folds = interval
        count = f", {folds} folds" if folds else ""
        text += f" (95% CI {low:.4f}–{high:.4f}{count})"
    return text


def _best(trials: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not completed:
        return None
    pick = max if direction == "maximize" else min
    return pick(completed, key=lambda t: t.value)


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def compute_summary(trials: list[FrozenTrial]) -> dict[str, Any]:
    """Trials by state and the compute spent (also shown in the report's summary)."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    saved = 0
    for trial in trials:
        planned = epochs_planned(trial)
        if trial.state == TrialState.PRUNED and planned:
            saved += max(0, planned - epochs_trained(trial))
    return {"counts": counts, "trial_hours": sum(trial_hours(t) for t in trials),
            "epochs_trained": sum(epochs_trained(t) for t in trials), "epochs_saved_by_pruning": saved}


def summary_html(study_name: str, trials: list[FrozenTrial], settings: StudySettings) -> str:
    summary = compute_summary(trials)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary["counts"].items())) or "no trials"
    best = _best(trials, settings.direction)
    rows = [["trials", f"{len(trials)} ({counts})"]]
    if best is not None:
        rows.append([f"best {settings.metric} ({settings.direction})", f"{_value_text(best)}, trial {best.number}"])
        config = config_of(best) or best.params
        rows.append(["best config", ", ".join(f"{k}={_format_number(v)}" for k, v in config.items())])
    else:
        rows.append([f"best {settings.metric}", "no completed trial yet"])
    if best is not None:
        rows.append(["ties", find_ties(trials, settings.direction).describe()])
    rows.append(["compute spent", f"{summary['trial_hours']:.2f} trial-hours, {summary['epochs_trained']} epochs trained, "
                                  f"{summary['epochs_saved_by_pruning']} epochs saved by pruning"])
    classes = settings.fingerprint.get("class_names") or []
    rows.append(["data", f"{settings.fingerprint.get('file_count', '?')} images, classes {', '.join(map(str, classes))}"])
    return _table(["", ""], rows, "summary")


def _ranking_html(study: optuna.Study) -> str:
    """The backbone ranking a budgeted search computed before training (empty when none)."""
    from ..workers._plan import TRANSFERABILITY, ranking_rows

    headers, rows = ranking_rows(study.user_attrs.get(TRANSFERABILITY))
    if not rows:
        return ""
    note = "<p class=\"note\">Candidates ranked by LogME on cached pooled features before any trial trained.</p>"
    return note + _table(list(headers), [list(row) for row in rows])


def baselines_html(trials: list[FrozenTrial], settings: StudySettings) -> str:
    """Each survey baseline against the best searched (non-baseline) trial, with its compute."""
    baselines = [t for t in trials if baseline_of(t)]
    if not baselines:
        return ""
    searched = _best([t for t in trials if not baseline_of(t)], settings.direction)
    sign = 1 if settings.direction == "maximize" else -1

    def row(label: str, trial: FrozenTrial) -> list[str]:
        delta = ""
        if searched is not None and trial.value is not None and trial is not searched:
            delta = f"{sign * (trial.value - searched.value):+.4f}"
        return [label, str(trial.number), trial.state.name.lower(), _value_text(trial), delta,
                str(epochs_trained(trial)), f"{trial_hours(trial) * 60:.1f}"]

    rows = [row(baseline_of(t), t) for t in baselines]
    if searched is not None:
        params = ", ".join(f"{k}={_format_number(v)}" for k, v in searched.params.items())
        rows.append(row(f"searched best ({params})", searched))
    else:
        rows.append(["searched best", "", "no completed searched trial yet", "", "", "", ""])
    header = ["configuration", "trial", "state", settings.metric, "vs searched best (+ is better)", "epochs", "minutes"]
    return _table(header, rows, "baselines")


# ---------------------------------------------------------------------------------------------
# Figures


def _figure_history(trials: list[FrozenTrial], settings: StudySettings) -> Any:
    import plotly.graph_objects as go

    completed = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                       key=lambda t: t.number)
    if not completed:
        return None
    pick = max if settings.direction == "maximize" else min
    best_so_far, running = [], None
    for trial in completed:
        running = trial.value if running is None else pick(running, trial.value)
        best_so_far.append(running)
    searched = [t for t in completed if not baseline_of(t)]
    baselines = [t for t in completed if baseline_of(t)]
    figure = go.Figure()
    figure.add_trace(go.Scattergl(x=[t.number for t in searched], y=[t.value for t in searched], mode="markers",
                                  name="trial", marker={"color": STATE_COLOURS["complete"], "size": 5}))
    if baselines:
        figure.add_trace(go.Scattergl(
            x=[t.number for t in baselines], y=[t.value for t in baselines], mode="markers", name="survey baseline",
            marker={"color": STATE_COLOURS["baseline"], "size": 11, "symbol": "star"},
            text=[baseline_of(t) for t in baselines], hovertemplate="%{text}<br>%{y:.4f}"))
    figure.add_trace(go.Scattergl(x=[t.number for t in completed], y=best_so_far, mode="lines", name="best so far",
                                  line={"color": STATE_COLOURS["best"], "shape": "hv"}))
    figure.update_layout(xaxis_title="trial", yaxis_title=settings.metric)
    return figure


def _model_study(trials: list[FrozenTrial], direction: str, limit: int, seed: int = 0) -> optuna.Study | None:
    """An in-memory study of (a random sample of `limit` of) the completed trials, for Optuna's figures."""
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not completed:
        return None
    if len(completed) > limit:
        completed = random.Random(seed).sample(completed, limit)
    study = optuna.create_study(direction=direction)
    light = [optuna.trial.create_trial(value=t.value, params=t.params, distributions=t.distributions)
             for t in sorted(completed, key=lambda t: t.number)]
    study.add_trials(light)
    return study


def _sample_note(trials: list[FrozenTrial], limit: int) -> str:
    completed = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    return f" (a random {limit} of the {completed} completed trials)" if completed > limit else ""


def _varied_parameters(study: optuna.Study) -> list[str]:
    values: dict[str, set[Any]] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(value)
    return [name for name, seen in values.items() if len(seen) > 1]


def _figure_importances(model: optuna.Study | None) -> tuple[Any, str]:
    if model is None or len(model.trials) < 2:
        return None, "needs at least two completed trials"
    varied = _varied_parameters(model)
    if not varied:
        return None, "no parameter took more than one value among the completed trials"
    from optuna.importance import FanovaImportanceEvaluator

    try:
        figure = optuna.visualization.plot_param_importances(
            model, evaluator=FanovaImportanceEvaluator(n_trees=16, seed=0), params=varied)
    except (ValueError, RuntimeError) as error:
        return None, f"Optuna could not compute importances ({error})"
    return figure, ""


def _figure_parallel(model: optuna.Study | None) -> tuple[Any, str]:
    if model is None:
        return None, "needs a completed trial"
    return optuna.visualization.plot_parallel_coordinate(model), ""


def _figure_slices(model: optuna.Study | None) -> tuple[Any, str]:
    if model is None:
        return None, "needs a completed trial"
    searched = {name for trial in model.trials for name in trial.params}
    params = [p for p in SLICE_PARAMETERS if p in searched]
    if not params:
        return None, "the study searches none of learning_rate, epochs, batch_size"
    return optuna.visualization.plot_slice(model, params=params), ""


def _figure_backbones(trials: list[FrozenTrial], settings: StudySettings) -> tuple[Any, str]:
    import plotly.graph_objects as go

    by_backbone: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            by_backbone.setdefault(backbone_of(trial), []).append(trial)
    if not by_backbone:
        return None, "needs a completed trial"
    figure = go.Figure()
    for backbone, group in sorted(by_backbone.items()):
        figure.add_trace(go.Box(y=[t.value for t in group], name=f"{backbone} ({len(group)})",
                                boxpoints="all" if len(group) <= 200 else "outliers", jitter=0.4, pointpos=0,
                                marker={"color": STATE_COLOURS["complete"], "size": 4},
                                line={"color": STATE_COLOURS["complete"]}, showlegend=False))
    baselines = [t for group in by_backbone.values() for t in group if baseline_of(t)]
    if baselines:
        names = {b: f"{b} ({len(g)})" for b, g in by_backbone.items()}
        figure.add_trace(go.Scatter(x=[names[backbone_of(t)] for t in baselines], y=[t.value for t in baselines],
                                    mode="markers", name="survey baseline", text=[baseline_of(t) for t in baselines],
                                    marker={"color": STATE_COLOURS["baseline"], "size": 12, "symbol": "star"},
                                    hovertemplate="%{text}<br>%{y:.4f}"))
    figure.update_layout(xaxis_title="backbone (completed trials)", yaxis_title=settings.metric)
    return figure, ""


def _curve_trials(trials: list[FrozenTrial], settings: StudySettings) -> list[FrozenTrial]:
    """Which trials get learning curves: baselines, the best, then an even spread of the rest."""
    with_history = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                    and history_of(t).get("loss")]
    if len(with_history) <= MAX_CURVE_TRIALS:
        return with_history
    chosen = {t.number: t for t in with_history if baseline_of(t)}
    completed = [t for t in with_history if t.state == TrialState.COMPLETE and t.value is not None]
    completed.sort(key=lambda t: t.value, reverse=settings.direction == "maximize")
    for trial in completed[:20]:
        chosen[trial.number] = trial
    rest = [t for t in with_history if t.number not in chosen]
    room = max(0, MAX_CURVE_TRIALS - len(chosen))
    if rest and room:
        stride = len(rest) / room
        for index in range(room):
            trial = rest[int(index * stride)]
            chosen[trial.number] = trial
    return [chosen[n] for n in sorted(chosen)]


def _figure_curves(trials: list[FrozenTrial], settings: StudySettings) -> tuple[Any, str]:
    """Training and validation accuracy and loss by epoch; pruned trials end early with an x."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    chosen = _curve_trials(trials, settings)
    if not chosen:
        return None, "no trial has recorded a per-epoch history yet"
    figure = make_subplots(rows=2, cols=2, subplot_titles=[title for _, title in CURVE_PANELS],
                           horizontal_spacing=0.08, vertical_spacing=0.12)
    groups = (("complete", lambda t: t.state == TrialState.COMPLETE and not baseline_of(t)),
              ("pruned", lambda t: t.state == TrialState.PRUNED),
              ("baseline", lambda t: t.state == TrialState.COMPLETE and bool(baseline_of(t))))
    for index, (key, _) in enumerate(CURVE_PANELS):
        row, col = index // 2 + 1, index % 2 + 1
        for group, belongs in groups:
            xs: list[Any] = []
            ys: list[Any] = []
            texts: list[Any] = []
            ends_x: list[int] = []
            ends_y: list[float] = []
            for trial in chosen:
                if not belongs(trial):
                    continue
                series = history_of(trial).get(key) or []
                if not series:
                    continue
                label = baseline_of(trial) or f"trial {trial.number}"
                xs += list(range(1, len(series) + 1)) + [None]
                ys += list(series) + [None]
                texts += [label] * len(series) + [None]
                if group == "pruned":
                    ends_x.append(len(series))
                    ends_y.append(series[-1])
            if not xs:
                continue
            colour = STATE_COLOURS[group]
            figure.add_trace(go.Scattergl(
                x=xs, y=ys, text=texts, mode="lines", name=group, legendgroup=group, showlegend=index == 0,
                line={"color": colour, "width": 2 if group == "baseline" else 1,
                      "dash": "dot" if group == "pruned" else "solid"},
                opacity=0.9 if group == "baseline" else 0.45,
                hovertemplate="%{text}<br>epoch %{x}: %{y:.4f}<extra></extra>"), row=row, col=col)
            if ends_x:
                figure.add_trace(go.Scattergl(
                    x=ends_x, y=ends_y, mode="markers", name="pruned here", legendgroup="pruned-end",
                    showlegend=index == 0, marker={"color": colour, "symbol": "x", "size": 7},
                    hoverinfo="skip"), row=row, col=col)
        figure.update_xaxes(title_text="epoch", row=row, col=col)
    figure.update_layout(height=720)
    shown = len(chosen)
    total = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    note = f"showing {shown} of {total} finished trials (baselines, the 20 best, an even spread of the rest)" \
        if shown < total else ""
    return figure, note


def _figure_best_curves(best: FrozenTrial | None) -> tuple[Any, str]:
    """The best trial's curves, drawn like the survey's figures (training vs validation)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    history = history_of(best) if best else {}
    if not history.get("loss"):
        return None, "the best trial has no recorded history"
    figure = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "loss"])
    for col, (train_key, val_key) in enumerate((("accuracy", "val_accuracy"), ("loss", "val_loss")), start=1):
        for key, name, colour in ((train_key, "training", "#1f77b4"), (val_key, "validation", "#ff7f0e")):
            series = history.get(key) or []
            if series:
                figure.add_trace(go.Scatter(x=list(range(1, len(series) + 1)), y=series, mode="lines+markers",
                                            name=name, legendgroup=name, showlegend=col == 1,
                                            line={"color": colour}), row=1, col=col)
        figure.update_xaxes(title_text="epoch", row=1, col=col)
    return figure, ""


def _figure_confusion(best: FrozenTrial | None, settings: StudySettings) -> tuple[Any, str]:
    import plotly.graph_objects as go

    matrix = metrics_of(best).get("confusion_matrix") if best else None
    if not matrix:
        return None, "the best trial has no recorded confusion matrix"
    classes = list(settings.fingerprint.get("class_names") or [])
    if len(classes) != len(matrix):
        classes = [str(i) for i in range(len(matrix))]
    figure = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", text=matrix,
                                  texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}: %{z}<extra></extra>"))
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                         width=520, height=460)
    return figure, ""


def _figure_roc(best: FrozenTrial | None) -> tuple[Any, str]:
    import plotly.graph_objects as go

    metrics = metrics_of(best) if best else {}
    roc = roc_curve_of(best) if best else None
    if roc is None:
        return None, ("the best trial has no recorded ROC curve (the `roc_curve` user attribute; "
                      "binary single-split trials record it)")
    auc = metrics.get("auc")
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"ROC (AUC {auc:.3f})"
                                if isinstance(auc, (int, float)) else "ROC", line={"color": "#d62728"}))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash", "color": "grey"}))
    figure.update_layout(xaxis_title="false positive rate (1 − specificity)", yaxis_title="true positive rate (sensitivity)",
                         width=520, height=460)
    return figure, ""


def _figure_reliability(best: FrozenTrial | None) -> tuple[Any, str]:
    """The best trial's reliability diagram (validation outputs, pooled over folds)."""
    import plotly.graph_objects as go

    diagram = reliability_of(best) if best else None
    if diagram is None:
        return None, "the best trial has no recorded reliability diagram (trials record it since issue 12)"
    largest = max(diagram["count"], default=1) or 1
    positive = str(diagram.get("kind", "")).startswith("positive")
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line={"dash": "dash", "color": "grey"}))
    figure.add_trace(go.Scatter(
        x=diagram["predicted"], y=diagram["observed"], mode="lines+markers", name="bins",
        marker={"size": [8 + 22 * (c / largest) ** 0.5 for c in diagram["count"]], "color": "#1f77b4"},
        text=[f"{c} images" for c in diagram["count"]],
        hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{text}<extra></extra>"))
    ece = diagram.get("ece")
    figure.update_layout(
        title=f"ECE {ece:.3f}" if isinstance(ece, (int, float)) else "",
        xaxis_title="mean predicted " + ("P(positive)" if positive else "confidence"),
        yaxis_title="observed share of positives" if positive else "observed accuracy",
        xaxis_range=[0, 1], yaxis_range=[0, 1], width=520, height=480)
    return figure, (f"below the diagonal: over-confident; dot area ~ images per bin; "
                    f"{diagram.get('binning') or 'equal-width bins'}")


def examples_html(settings: StudySettings, model_file: str | Path | None, per_row: int = 4) -> str:
    """The three rows (right, false positives, false negatives) of Grad-CAM overlays on the study's
    validation images (never its locked test split), as embedded PNGs; a note without a model."""
    if model_file is None:
        return ('<p class="note">No model given: pass <code>--model MODEL.keras</code> (e.g. the model of '
                '<code>medsweep train --final</code>) to see where it looks on the validation images.</p>')
    from medsweep.objectives import ObjectiveError
    from medsweep.objectives.evaluation import example_overlays, seen_images
    from medsweep.objectives.images import ImageDataset, LabeledFiles
    from medsweep.objectives.model import load_model

    from ..results._retrain import held_out_split

    try:
        model, metadata = load_model(model_file)
        class_names = list(metadata.get("class_names") or [])
        if len(class_names) != 2:
            return f'<p class="note">No rows: the three rows need a two-class model; this one has {len(class_names)} classes.</p>'
        dataset = ImageDataset.open(settings.data)
        if list(dataset.class_names) != class_names:
            raise ReportError(f"--model {model_file} has classes {class_names}, the study {list(dataset.class_names)}; "
                              "pass a model trained on this study")
        data = dataset.arrays(int(model.input_shape[1]))
        threshold = float((metadata.get("threshold") or {}).get("value") or 0.5)
        rows = example_overlays(model, data.x_val, data.y_val, class_names, threshold=threshold, per_row=per_row)
    except ObjectiveError as error:
        raise ReportError(f"--model {model_file}: {error}") from None
    validation = held_out_split(dataset)[1]
    seen = seen_images(metadata, LabeledFiles(dataset.class_names, tuple(validation), tuple(int(v) for v in data.y_val)))
    trained = (f" {seen.trained} of these {seen.total} images trained this model, so its errors here understate "
               "its errors on new images." if seen.known and seen.trained else "")
    parts = [f'<p class="note">{len(data.y_val)} validation images of the study (never the locked test split), '
             f"threshold {threshold:.3f}; each overlay is Grad-CAM of the predicted class (red: strongest evidence). "
             f"Saliency shows where the evidence lies, not validated localisation of disease.{html.escape(trained)}</p>"]
    for name, items in rows.items():
        parts.append(f'<h3>{html.escape(name)} ({len(items)})</h3><div class="examples" data-row="{html.escape(name)}">')
        if not items:
            parts.append('<p class="note">none</p>')
        for item in items:
            caption = f"true {item['true']}, P({class_names[1]}) {item['probability']:.3f}"
            parts.append(f'<figure><img src="{item["uri"]}" alt="{html.escape(caption)}" width="160">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    return "\n".join(parts)


def build_report(study: optuna.Study, settings: StudySettings) -> Report:
    """Read the study once and build the summary, the baseline table and every figure."""
    timings: dict[str, float] = {}

    def timed(name: str, step: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        result = step()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - began
        return result

    trials = timed("load trials", lambda: study.get_trials(deepcopy=False))
    best = _best(trials, settings.direction)
    model = timed("sample study", lambda: _model_study(trials, settings.direction, MAX_MODEL_TRIALS))
    small = model
    if model is not None and len(model.trials) > MAX_IMPORTANCE_TRIALS:
        small = timed("sample study", lambda: _model_study(model.trials, settings.direction, MAX_IMPORTANCE_TRIALS))
    sample = _sample_note(trials, MAX_MODEL_TRIALS)
    figures: list[ReportFigure] = []

    def add(key: str, title: str, built: Any) -> None:
        figure, note = built if isinstance(built, tuple) else (built, "" if built is not None else "needs a completed trial")
        figures.append(ReportFigure(key, title, figure, note))

    add("history", "Optimisation history", timed("history", lambda: _figure_history(trials, settings)))
    add("importances", f"Parameter importances (fANOVA){_sample_note(trials, MAX_IMPORTANCE_TRIALS)}",
        timed("importances", lambda: _figure_importances(small)))
    add("parallel", f"Parallel coordinates{sample}", timed("parallel", lambda: _figure_parallel(model)))
    add("slices", f"Slice plots: learning rate, epochs, batch size{sample}", timed("slices", lambda: _figure_slices(model)))
    add("backbones", "Value by backbone", timed("backbones", lambda: _figure_backbones(trials, settings)))
    add("curves", "Learning curves by trial", timed("curves", lambda: _figure_curves(trials, settings)))
    best_title = f" (trial {best.number})" if best else ""
    add("best_curves", f"Best trial's learning curves{best_title}", timed("best", lambda: _figure_best_curves(best)))
    add("confusion", f"Best trial's confusion matrix{best_title}", timed("best", lambda: _figure_confusion(best, settings)))
    add("roc", f"Best trial's ROC curve{best_title}", timed("best", lambda: _figure_roc(best)))
    add("reliability", f"Best trial's reliability diagram, validation images{best_title}",
        timed("best", lambda: _figure_reliability(best)))
    summary = timed("tables", lambda: summary_html(study.study_name, trials, settings) + _ranking_html(study))
    baselines = timed("tables", lambda: baselines_html(trials, settings))
    return Report(study.study_name, summary, baselines, figures, timings)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 4px 10px; border-bottom: 1px solid #eee;
text-align: left; vertical-align: top; } table.summary td:first-child { font-weight: 600; white-space: nowrap; }
.note { color: #777; font-style: italic; } .meta { color: #777; }
.examples { display: flex; flex-wrap: wrap; gap: 8px; } .examples figure { margin: 0; width: 160px; }
.examples img { width: 160px; height: auto; image-rendering: pixelated; } figcaption { font-size: 0.8em; }
"""


def render_html(report: Report) -> str:
    """The whole page; the plotly.js bundle is inlined once in the head (no CDN)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    began = time.perf_counter()
    title = html.escape(f"medsweep report: {report.study_name}")
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\">{REPORT_GENERATOR}<title>{title}</title>",
             f"<style>{_STYLE}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>",
             f"<h1>{title}</h1><p class=\"meta\">generated {generated} by medsweep</p>",
             "<h2 id=\"summary\">Summary</h2>", report.summary_html]
    if report.baselines_html:
        parts += ["<h2 id=\"baselines\">Survey baselines vs the searched best</h2>", report.baselines_html]
    for item in report.figures:
        parts.append(f"<h2 id=\"{item.key}\">{html.escape(item.title)}</h2>")
        if item.figure is None:
            parts.append(f"<p class=\"note\">Not drawn: {html.escape(item.note)}.</p>")
            continue
        if item.note:
            parts.append(f"<p class=\"note\">{html.escape(item.note)}</p>")
        parts.append(pio.to_html(item.figure, full_html=False, include_plotlyjs=False, div_id=f"figure-{item.key}",
                                 config={"displaylogo": False}))
    if report.examples_html:
        parts += ["<h2 id=\"examples\">Where the model looks: validation images</h2>", report.examples_html]
    parts.append("</body></html>")
    report.timings["html"] = time.perf_counter() - began
    return "\n".join(parts)


def write_report(report: Report, path: str | Path) -> Path:
    path = Path(path).expanduser()
    text = render_html(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ReportError(f"cannot write the report to {path} ({error.strerror}); choose another -o path") from None
    return path


def write_pngs(report: Report, directory: str | Path) -> list[Path]:
    """Each drawn figure as DIRECTORY/<key>.png, through kaleido (one Chrome start for all)."""
    import plotly.io as pio

    directory = Path(directory).expanduser()
    drawn = [item for item in report.figures if item.figure is not None]
    paths = [directory / f"{item.key}.png" for item in drawn]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportError(f"cannot create the PNG folder {directory} ({error.strerror}); choose another --png") from None
    if not drawn:
        return []
    began = time.perf_counter()
    try:
        pio.write_images([item.figure for item in drawn], paths, scale=PNG_SCALE,
                         width=[item.figure.layout.width or 1000 for item in drawn],
                         height=[item.figure.layout.height or 560 for item in drawn])
    except Exception as error:  # kaleido raises several unrelated types when Chrome is missing or dies
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ReportError(
            f"PNG export failed ({type(error).__name__}: {first}); kaleido needs Chrome or Chromium "
            "(e.g. `apt-get install chromium`); or leave out --png"
        ) from None
    from medsweep.objectives.metrics import mark_png_file

    for path in paths:  # so the next `report --png` recognises them as its own and may replace them
        mark_png_file(path, REPORT_FIGURE_PNG.name)
    report.timings["png"] = time.perf_counter() - began
    return paths


def write_study_report(study: optuna.Study, settings: StudySettings, output: str | Path,
                       png_dir: str | Path | None = None, model_file: str | Path | None = None
                       ) -> tuple[Report, Path, list[Path]]:
    """`medsweep report`: the HTML, and the PNGs when asked."""
    report = build_report(study, settings)
    began = time.perf_counter()
    report.examples_html = examples_html(settings, model_file)
    report.timings["examples"] = time.perf_counter() - began
    path = write_report(report, output)
    pngs = write_pngs(report, png_dir) if png_dir is not None else []
    return report, path, pngs
