"""Exported configs: the best trial as YAML (config, metrics, study, trial, data fingerprint,
versions, and what it says about cross-validation, the threshold and the locked test set),
written and read back."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from objectives import ObjectiveError, TrialConfig, parse_objective

from .._errors import MedsweepError, StudyError
from .._record import config_of, cv_of, metrics_of
from ..study._study import StudySettings

EXPORT_FORMAT = 1
_VERSIONED = ("medsweep", "optuna", "optuna-integration", "keras", "tensorflow", "scikit-learn", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of the packages that produced a result (read from metadata, no imports)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise StudyError(
            f"study {study.study_name!r} has no completed trial yet; run `medsweep worker {study.study_name}` first"
        )
    return study.best_trial


def export_best(study: optuna.Study, settings: StudySettings) -> dict[str, Any]:
    """The exported-config document for the study's best trial."""
    trial = best_trial(study)
    document = {
        "medsweep_export": EXPORT_FORMAT,
        "config": config_of(trial),
        "metrics": metrics_of(trial),
        "objective": {"metric": settings.metric, "direction": settings.direction, "value": trial.value},
        "study": study.study_name,
        "trial": trial.number,
        "data": {**settings.data.to_dict(), "fingerprint": settings.fingerprint},
        "versions": package_versions(),
    }
    document.update(trust_sections(trial, settings))
    return document


def trust_sections(trial: optuna.trial.FrozenTrial, settings: StudySettings) -> dict[str, Any]:
    """The export's `cv`, `threshold` and `test` sections for the best trial."""
    sections: dict[str, Any] = {}
    cv = cv_of(trial)
    if cv is not None:
        sections["cv"] = cv
    target = parse_objective(settings.metric)[2]
    metrics = metrics_of(trial)
    if target is not None and metrics.get(f"{settings.metric} threshold") is not None:
        where = (f"the mean over the {metrics.get('folds')} validation folds" if settings.data.cv
                 else "the validation split")
        sections["threshold"] = {
            "value": metrics[f"{settings.metric} threshold"], "target_specificity": target,
            "chosen_on": f"{where} of trial {trial.number}; never on test data",
        }
    if settings.data.has_test_split:
        sections["test"] = {"locked": True, "measured": False,
                            "note": "no trial saw these images; `medsweep train --final` measures them once"}
    return sections


def write_export(document: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def read_export(path: str | Path) -> tuple[TrialConfig, dict[str, Any]]:
    """Read an exported config (or a bare TrialConfig mapping) and validate its config."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise MedsweepError(f"cannot read config file {path} ({error.strerror}); pass the file `medsweep export` wrote") from None
    except yaml.YAMLError as error:
        raise MedsweepError(f"config file {path} is not valid YAML ({getattr(error, 'problem', error)}); fix or re-export it") from None
    if not isinstance(document, dict):
        raise MedsweepError(f"config file {path} must be a mapping; pass the file `medsweep export` wrote")
    raw = document.get("config", document) if "medsweep_export" in document else document
    try:
        return TrialConfig.from_dict(raw), document
    except ObjectiveError as error:
        raise MedsweepError(f"config file {path}: {error}") from None
