"""The trial record has one home: its names, its writer and readers (no training needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from medsweep.search import _record as record
from medsweep.search.results._status import trial_rows

ROOT = Path(__file__).resolve().parents[2]


def _trial(number: int = 0, *, user_attrs: dict | None = None, steps: int = 0,
           state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(
        state=state, value=0.5 if state == TrialState.COMPLETE else None, params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)},
        user_attrs=user_attrs or {}, intermediate_values={i: 0.1 * i for i in range(steps)})
    trial.number = number
    return trial


def test_epochs_trained_counts_the_longest_curve_and_never_folds() -> None:
    curves = {"loss": [1.0, 0.9, 0.8], "val_loss": [1.1, 1.0, 0.9], "auc": [0.5, 0.6, 0.7]}
    assert record.epochs_trained(_trial(user_attrs={"history": curves}, steps=3)) == 3
    # A cross-validated trial reports one intermediate value per fold: 5 folds are not 5 epochs.
    cv = {"history": {"loss": [1.0, 0.9]}, "cv": {"mean": 0.7, "std": 0.1, "ci95": [0.6, 0.8], "folds": [0.7] * 5}}
    assert record.epochs_trained(_trial(user_attrs=cv, steps=5)) == 2
    assert record.epochs_trained(_trial(user_attrs={"cv": cv["cv"]}, steps=5)) == 0
    # Records from before the history attribute fall back to per-epoch intermediate values.
    assert record.epochs_trained(_trial(steps=4)) == 4


def test_status_and_report_count_epochs_the_same_way() -> None:
    from medsweep.search.report._report import compute_summary

    trials = [_trial(0, user_attrs={"history": {"loss": [1.0] * 3, "val_auc": [0.5] * 3}}, steps=3),
              _trial(1, user_attrs={"history": {"loss": [1.0, 0.9], "val_loss": [1.0, 0.9]},
                                    "cv": {"ci95": [0.5, 0.7], "folds": [0.6, 0.6, 0.6]}}, steps=3)]
    study = optuna.create_study()
    study.add_trials(trials)
    rows = trial_rows(study)
    assert [row["epochs"] for row in rows] == ["3", "2"]
    assert compute_summary(study.trials)["epochs_trained"] == 5
    assert rows[1]["95% CI"] == "[0.500, 0.700] 3 folds"


def test_writer_and_readers_round_trip_through_a_stored_trial() -> None:
    study = optuna.create_study()
    trial = study.ask()
    writer = record.TrialRecord(trial)
    writer.config({"backbone": "VGG19", "epochs": 4})
    writer.history({"loss": [0.123456789, 0.1], "val_auc": [0.5, 0.6], "unknown": [1.0]})
    writer.metrics({"auc": 0.6})
    writer.roc_curve({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})
    writer.fail_reason("x" * 600)
    frozen = study.trials[0]
    assert record.config_of(frozen) == {"backbone": "VGG19", "epochs": 4}
    assert record.history_of(frozen)["loss"] == [0.123457, 0.1]
    assert set(record.history_of(frozen)) == set(record.HISTORY_KEYS)
    assert record.metrics_of(frozen) == {"auc": 0.6} and record.cv_of(frozen) is None
    assert record.roc_curve_of(frozen) == {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}
    assert len(record.fail_reason_of(frozen)) == 500
    assert record.epochs_planned(frozen) == 4 and record.backbone_of(frozen) == "VGG19"
    # The names are the stored contract: studies written before this module still read.
    assert (record.CONFIG, record.HISTORY, record.METRICS, record.CV, record.FAIL_REASON, record.ROC_CURVE,
            record.BASELINE, record.WORKER) == ("config", "history", "metrics", "cv", "fail_reason", "roc_curve",
                                                "baseline", "medsweep:worker")


def test_an_old_record_with_the_roc_curve_inside_metrics_still_reads() -> None:
    old = _trial(user_attrs={"metrics": {"auc": 0.9, "roc_curve": {"fpr": [0, 1], "tpr": [0, 1]}}})
    assert record.roc_curve_of(old) == {"fpr": [0, 1], "tpr": [0, 1]}
    assert record.roc_curve_of(_trial()) is None


def _names_a_trial_attribute(node: ast.AST) -> bool:
    """A string literal used as a trial attribute's name: set_user_attr("x", ...),
    user_attrs["x"], system_attrs.get("x")."""
    def literal(value: ast.AST | None) -> bool:
        return isinstance(value, ast.Constant) and isinstance(value.value, str)

    def attrs(value: ast.AST) -> bool:
        return isinstance(value, ast.Attribute) and value.attr in ("user_attrs", "system_attrs")

    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ("set_user_attr", "set_trial_user_attr", "set_trial_system_attr", "set_system_attr"):
            return any(literal(arg) for arg in node.args[:2])
        if node.func.attr == "get" and attrs(node.func.value):
            return bool(node.args) and literal(node.args[0])
    return isinstance(node, ast.Subscript) and attrs(node.value) and literal(node.slice)


def test_only_the_record_module_names_trial_attributes() -> None:
    """Every consumer reads and writes trial attributes through search/_record.py's names."""
    offenders = []
    for path in sorted((ROOT / "search").rglob("*.py")):
        if path.name == "_record.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if _names_a_trial_attribute(node):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"trial attribute named outside search/_record.py: {offenders}"
