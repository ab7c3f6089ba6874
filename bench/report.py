"""How long `medsweep report` takes on a large study: builds a synthetic study of N trials
(default 10,000) with optuna.trial.create_trial/add_trials, in the medsweep trial-record
format, then times loading, building the figures and writing the HTML.

    python -m bench.report [--trials 10000] [--storage sqlite:///bench-report.db]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from medsweep.search.study._space import SURVEY_BACKBONES

DISTRIBUTIONS = {
    "backbone": CategoricalDistribution(list(SURVEY_BACKBONES)),
    "learning_rate": FloatDistribution(1e-6, 1e-2, log=True),
    "epochs": IntDistribution(5, 60),
    "batch_size": CategoricalDistribution([4, 5, 8, 16, 32]),
}
SYNTHETIC_CLASSES = ["abdomen", "chest"]


def _curve(rng: np.random.Generator, quality: float, epochs: int) -> dict[str, list[float]]:
    steps = np.arange(1, epochs + 1)
    accuracy = 0.5 + (quality - 0.5) * (1 - np.exp(-steps / 6)) + rng.normal(0, 0.02, epochs)
    val_accuracy = accuracy - 0.05 + rng.normal(0, 0.04, epochs)
    loss = 0.7 * np.exp(-steps / 10) + 0.1 + rng.normal(0, 0.01, epochs)
    val_loss = loss + 0.1 + rng.normal(0, 0.03, epochs)
    clip = lambda a: [round(float(v), 4) for v in np.clip(a, 0, None)]  # noqa: E731
    return {"loss": clip(loss), "val_loss": clip(val_loss), "accuracy": clip(np.minimum(accuracy, 1)),
            "val_accuracy": clip(np.minimum(val_accuracy, 1)), "auc": clip(np.minimum(accuracy + 0.05, 1)),
            "val_auc": clip(np.minimum(val_accuracy + 0.05, 1))}


def synthetic_trials(n_trials: int, seed: int = 0, *, baselines: bool = True,
                     cross_validated: bool = False) -> list[optuna.trial.FrozenTrial]:
    """Trials shaped like a worker's: params, config, per-epoch history and intermediate values,
    metrics with a confusion matrix, a ROC curve; about 60% complete, 35% pruned, 5% failed.
    The first ten are the survey baselines when `baselines` is on."""
    from medsweep.search import _record as record
    from medsweep.search.study._paper import survey_baselines

    rng = np.random.default_rng(seed)
    start = datetime.datetime(2026, 1, 1)
    trials = []
    planned = list(survey_baselines()) if baselines else []
    for number in range(n_trials):
        user_attrs: dict[str, Any] = {}
        if number < len(planned):
            params = dict(planned[number].params)
            user_attrs[record.BASELINE] = planned[number].label
        else:
            params = {"backbone": str(rng.choice(SURVEY_BACKBONES)),
                      "learning_rate": float(10 ** rng.uniform(-6, -2)),
                      "epochs": int(rng.integers(5, 61)),
                      "batch_size": int(rng.choice([4, 5, 8, 16, 32]))}
        quality = 0.95 - 0.08 * abs(math.log10(params["learning_rate"]) + 3.5) + rng.normal(0, 0.03)
        draw = rng.random()
        state = TrialState.COMPLETE if draw < 0.6 or number < len(planned) else (
            TrialState.PRUNED if draw < 0.95 else TrialState.FAIL)
        epochs = params["epochs"] if state == TrialState.COMPLETE else int(rng.integers(1, params["epochs"] + 1))
        history = _curve(rng, quality, epochs)
        config = {"backbone": params["backbone"], "image_size": None, "weights": "imagenet", "alpha": 1.0,
                  "learning_rate": params["learning_rate"], "epochs": params["epochs"],
                  "batch_size": params["batch_size"], "dense_units": 256, "dropout": 0.5,
                  "augmentation": True, "fine_tune_fraction": 0.0, "seed": 0}
        user_attrs.update({record.CONFIG: config, record.HISTORY: history})
        value = None
        if state == TrialState.COMPLETE:
            value = float(min(1.0, history["val_auc"][-1]))
            correct = int(round(20 * value))
            user_attrs[record.METRICS] = {
                "auc": value, "accuracy": history["val_accuracy"][-1], "n": 40,
                "confusion_matrix": [[correct, 20 - correct], [20 - correct, correct]],
            }
            user_attrs[record.ROC_CURVE] = {"fpr": [0.0, 0.1, 0.3, 1.0], "tpr": [0.0, value * 0.6, value, 1.0]}
            # No random draws here, so the trials after this one stay as they were.
            observed = [0.1 * value, 0.3 * value, 0.5, 1 - 0.3 * value, 1 - 0.1 * value]
            user_attrs[record.RELIABILITY] = {
                "kind": "positive-class probability", "bins": 10, "binning": "10 equal-width bins over [0, 1]",
                "predicted": [0.15, 0.35, 0.5, 0.65, 0.85], "observed": observed, "count": [8, 8, 8, 8, 8],
                "ece": sum(abs(o - p) for o, p in zip(observed, (0.15, 0.35, 0.5, 0.65, 0.85))) / 5}
            if cross_validated:
                half = float(rng.uniform(0.02, 0.08))
                user_attrs[record.CV] = {"mean": value, "std": half, "ci95": [max(0.0, value - half), min(1.0, value + half)],
                                    "folds": [value + float(d) for d in rng.normal(0, half, 5)]}
        elif state == TrialState.FAIL:
            user_attrs[record.FAIL_REASON] = "ResourceExhaustedError: OOM when allocating tensor"
        trial = optuna.trial.create_trial(
            state=state, value=value, params=params, distributions=DISTRIBUTIONS, user_attrs=user_attrs,
            intermediate_values={step: v for step, v in enumerate(history["val_auc"])},
        )
        seconds = epochs * float(rng.uniform(3, 30))
        trial.datetime_start = start + datetime.timedelta(seconds=number * 60)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=seconds)
        trials.append(trial)
    return trials


def build_synthetic_study(storage: Any, name: str, n_trials: int, seed: int = 0, *,
                          baselines: bool = True, cross_validated: bool = False) -> optuna.Study:
    """A medsweep study (settings included) holding `n_trials` synthetic finished trials."""
    from medsweep.objectives.images import DataSpec
    from medsweep.search.study._study import SETTINGS_KEY, StudySettings

    fingerprint = {"class_names": SYNTHETIC_CLASSES, "file_count": 200, "content_hash": "synthetic"}
    space = {"backbone": list(SURVEY_BACKBONES), "learning_rate": {"low": 1e-6, "high": 1e-2, "log": True},
             "epochs": {"low": 5, "high": 60}, "batch_size": [4, 5, 8, 16, 32]}
    settings = StudySettings(DataSpec("/nonexistent/synthetic"), fingerprint, space, "auc", "maximize", "median")
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    study.set_user_attr(SETTINGS_KEY, settings.to_dict())
    study.add_trials(synthetic_trials(n_trials, seed, baselines=baselines, cross_validated=cross_validated))
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--storage", help="storage URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from medsweep.search.report._report import build_report, write_report
    from medsweep.search.study._study import load_study, study_exists
    from medsweep.storage import open_storage

    with tempfile.TemporaryDirectory() as folder:
        url = args.storage or f"sqlite:///{Path(folder) / 'bench-report.db'}"
        storage = open_storage(url)
        name = f"bench-report-{args.trials}"
        began = time.perf_counter()
        if not study_exists(storage, name):  # a --storage that already holds it is reused
            build_synthetic_study(storage, name, args.trials)
        build_seconds = time.perf_counter() - began
        began = time.perf_counter()
        study, settings = load_study(storage, name)
        report = build_report(study, settings)
        path = write_report(report, Path(folder) / "report.html")
        report_seconds = time.perf_counter() - began
        size_mb = path.stat().st_size / 1e6
    rows = [("trials", f"{args.trials}"), ("building the study (s)", f"{build_seconds:.1f}"),
            ("report, load to HTML (s)", f"{report_seconds:.1f}"), ("HTML size (MB)", f"{size_mb:.1f}")]
    rows += [(f"  {step} (s)", f"{seconds:.2f}") for step, seconds in report.timings.items()]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    print(json.dumps({"bench": "report", "trials": args.trials, "build_s": round(build_seconds, 2),
                      "report_s": round(report_seconds, 2), "html_mb": round(size_mb, 2),
                      "steps_s": {k: round(v, 2) for k, v in report.timings.items()}}))


if __name__ == "__main__":
    main()
