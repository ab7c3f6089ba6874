"""The trial record: every attribute name a medsweep trial carries, the writer the objective
uses and the readers status, report, export and the workers use, so each rule lives once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

# User attributes (shown by optuna-dashboard); their names are part of stored studies, never rename.
CONFIG = "config"  # the full TrialConfig as a dict
HISTORY = "history"  # {"loss": [...], "val_loss": [...], ...}, one value per epoch
METRICS = "metrics"  # final validation metrics (fold means when cross-validated)
CV = "cv"  # {"mean", "std", "ci95": [low, high], "folds": [...]} when cross-validated
FAIL_REASON = "fail_reason"  # one line on a failed trial
ROC_CURVE = "roc_curve"  # {"fpr": [...], "tpr": [...]} of a binary single-split trial
BASELINE = "baseline"  # the survey baseline's label on a trial `medsweep paper` enqueued
# {"kind", "bins", "binning", "predicted": [...], "observed": [...], "count": [...], "ece"} of the
# trial's validation outputs (pooled over folds when cross-validated), for the report's diagram.
RELIABILITY = "reliability"
# Keys inside the `cv` attribute beyond cv_summary's: the validation share of one fold, which the
# corrected resampled t-test of the ties needs (n_validation / n_total).
CV_VALIDATION_SHARE = "validation_share"
WARNING = "warning"  # one line when a trial's score measures nothing (e.g. constant outputs)
STAGE = "stage"  # a budgeted search's stage: frozen | partial | full
STAGES = ("frozen", "partial", "full")  # cheapest first
PROMOTED_FROM = "promoted_from"  # the number of the trial whose config a promoted trial trains deeper
STOPPED_BY = "stopped_by"  # why a pruned trial stopped: the pruner (where, at what value), the wall budget, divergence

# System attributes (not shown to users).
WORKER = "medsweep:worker"  # which process ran (or runs) the trial
# Set on a trial before it is failed for a retry (handed back, or its worker died): a failed trial
# that carries it but whose retry was never queued gets one from the next worker.
RETRY_MARK = "medsweep:retry"
OWN_SYSTEM_PREFIX = "medsweep:"  # a worker's bookkeeping on a trial; a retry starts without it
RETRY_HISTORY = "retry_history"  # Optuna's: numbers of the trials this one retries
FAILED_TRIAL = "failed_trial"  # Optuna's: the id of the trial this one retries
FIXED_PARAMS = "fixed_params"  # Optuna's: the parameters an enqueued trial (or a retry) fixes

HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "auc", "val_auc")


# ---------------------------------------------------------------------------------------------
# Readers: each takes a FrozenTrial (or anything with user_attrs / system_attrs) and never fails
# on an old or partial record.


def config_of(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's TrialConfig as a dict (empty before the objective sampled it)."""
    return dict(trial.user_attrs.get(CONFIG) or {})


def history_of(trial: FrozenTrial) -> dict[str, list[float]]:
    """Per-epoch curves (fold means per epoch when cross-validated)."""
    history = trial.user_attrs.get(HISTORY) or {}
    # The stored lists themselves, not copies: the report reads 10,000 trials' curves.
    return {key: values for key, values in history.items() if isinstance(values, list)}


def metrics_of(trial: FrozenTrial) -> dict[str, Any]:
    """Final validation metrics."""
    return dict(trial.user_attrs.get(METRICS) or {})


def cv_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The cross-validation summary, or None for a single-split trial."""
    cv = trial.user_attrs.get(CV)
    return cv if isinstance(cv, dict) else None


def cv_interval(trial: FrozenTrial) -> tuple[float, float, int] | None:
    """(low, high, folds) of the cross-validated 95% interval, or None when there is none."""
    cv = cv_of(trial)
    ci95 = cv.get("ci95") if cv else None
    if not isinstance(ci95, (list, tuple)) or len(ci95) != 2 or ci95[0] is None:
        return None
    folds = cv.get("folds") if cv else None
    return float(ci95[0]), float(ci95[1]), len(folds) if isinstance(folds, list) else 0


def fold_scores(trial: FrozenTrial) -> list[float] | None:
    """The objective's value on each cross-validation fold, or None for a single-split trial."""
    cv = cv_of(trial)
    folds = cv.get("folds") if cv else None
    if not isinstance(folds, list) or not folds or any(not isinstance(v, (int, float)) for v in folds):
        return None
    return [float(v) for v in folds]


def validation_share(trial: FrozenTrial) -> float | None:
    """n_validation / n_total of one fold; older records without it fall back to 1/k (k folds)."""
    cv = cv_of(trial) or {}
    share = cv.get(CV_VALIDATION_SHARE)
    if isinstance(share, (int, float)) and 0 < share < 1:
        return float(share)
    folds = fold_scores(trial)
    return 1.0 / len(folds) if folds and len(folds) > 1 else None


def reliability_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The reliability-diagram data of the trial's validation outputs, if recorded."""
    diagram = trial.user_attrs.get(RELIABILITY)
    return diagram if isinstance(diagram, dict) and diagram.get("predicted") is not None else None


def warning_of(trial: FrozenTrial) -> str | None:
    """The trial's warning (constant outputs: the network does not see the images), if any."""
    text = trial.user_attrs.get(WARNING)
    return text if isinstance(text, str) else None


def fail_reason_of(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get(FAIL_REASON) or "")


def stopped_by_of(trial: FrozenTrial) -> str:
    """Why a pruned trial stopped (the pruner, the wall budget, divergence), or '' (older records
    of trials the pruner stopped)."""
    return str(trial.user_attrs.get(STOPPED_BY) or "")


def roc_curve_of(trial: FrozenTrial) -> dict[str, list[float]] | None:
    """The ROC points (older records kept them inside `metrics`)."""
    roc = trial.user_attrs.get(ROC_CURVE) or metrics_of(trial).get(ROC_CURVE)
    return roc if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr") else None


def baseline_of(trial: FrozenTrial) -> str:
    """The survey baseline's label, or '' for a searched trial."""
    return str(trial.user_attrs.get(BASELINE) or "")


def worker_of(trial: FrozenTrial, default: str = "") -> str:
    return str(trial.system_attrs.get(WORKER) or default)


def retried_from(trial: FrozenTrial) -> int | None:
    """The trial id this trial retries (Optuna's `failed_trial`), if it is a retry."""
    return trial.system_attrs.get(FAILED_TRIAL)


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the earlier trials this one retries, oldest first."""
    return list(trial.system_attrs.get(RETRY_HISTORY) or [])


def is_cross_validated(trial: FrozenTrial) -> bool:
    return CV in trial.user_attrs or "folds" in metrics_of(trial)


def epochs_trained(trial: FrozenTrial) -> int:
    """Epochs a trial ran, counted one way everywhere: its longest recorded curve. Records
    without curves fall back to the intermediate values, which are per epoch except when the
    trial was cross-validated (then they are per fold and say nothing about epochs)."""
    lengths = [len(values) for values in history_of(trial).values()]
    if lengths:
        return max(lengths)
    return 0 if is_cross_validated(trial) else len(trial.intermediate_values)


def epochs_planned(trial: FrozenTrial) -> int | None:
    epochs = config_of(trial).get("epochs", trial.params.get("epochs"))
    return int(epochs) if isinstance(epochs, (int, float)) else None


def stage_of_fraction(fraction: Any) -> str | None:
    """The stage a fine_tune_fraction belongs to: frozen (0), full (1) or partial (between)."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
        return None
    if fraction <= 0:
        return "frozen"
    return "full" if fraction >= 1.0 else "partial"


def stage_of(trial: FrozenTrial) -> str | None:
    """A trial's stage: the one a budgeted plan wrote, else the one its depth implies (retries and
    unbudgeted studies keep only parameters); None when the trial names no depth yet."""
    stage = trial.user_attrs.get(STAGE)
    if stage in STAGES:
        return stage
    fraction = trial.params.get("fine_tune_fraction", config_of(trial).get("fine_tune_fraction"))
    return stage_of_fraction(fraction)


def backbone_of(trial: FrozenTrial) -> str:
    return str(trial.params.get("backbone") or config_of(trial).get("backbone", "?"))


def objective_steps(trial: FrozenTrial) -> tuple[str, dict[int, float]]:
    """The intermediate objective values and what a step is: 'fold' or 'epoch'."""
    return ("fold" if is_cross_validated(trial) else "epoch"), dict(trial.intermediate_values)


# ---------------------------------------------------------------------------------------------
# Writer: the objective writes the record through this, nothing else does.


def history_record(history: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """The stored form of a history: the known curves, rounded to 6 digits."""
    return {key: [round(float(v), 6) for v in history.get(key, [])] for key in HISTORY_KEYS}


class TrialRecord:
    """Writes one running trial's record (an `optuna.Trial`, or anything with set_user_attr)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def config(self, config: Mapping[str, Any]) -> None:
        self.trial.set_user_attr(CONFIG, dict(config))

    def history(self, history: Mapping[str, list[float]]) -> None:
        self.trial.set_user_attr(HISTORY, history_record(history))

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        self.trial.set_user_attr(METRICS, dict(metrics))

    def cv(self, summary: Mapping[str, Any]) -> None:
        self.trial.set_user_attr(CV, dict(summary))

    def roc_curve(self, roc: Mapping[str, list[float]]) -> None:
        self.trial.set_user_attr(ROC_CURVE, dict(roc))

    def reliability(self, diagram: Mapping[str, Any]) -> None:
        self.trial.set_user_attr(RELIABILITY, {key: _finite(value) for key, value in diagram.items()})

    def warning(self, text: str) -> None:
        self.trial.set_user_attr(WARNING, text)

    def fail_reason(self, reason: str) -> None:
        self.trial.set_user_attr(FAIL_REASON, reason[:500])

    def stopped_by(self, reason: str) -> None:
        self.trial.set_user_attr(STOPPED_BY, reason[:500])


def _finite(value: Any) -> Any:
    # Storages keep JSON: a NaN (ECE of an empty set) is stored as null.
    return None if isinstance(value, float) and value != value else value


def describe_exception(error: BaseException) -> str:
    """One line for a failed trial's `fail_reason`."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
