"""Exported configs: the best trial as YAML (config, metrics, study, trial, data fingerprint,
versions, and what it says about cross-validation, the threshold and the locked test set),
written and read back."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from medsweep.objectives import ObjectiveError, TrialConfig, quoted
from medsweep.objectives.metrics import parse_objective

from .._errors import MedsweepError, StudyError
from .._yaml import dump_yaml, load_yaml_file
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


def export_best(study: optuna.Study, settings: StudySettings, prefer: str = "best",
                storage: Any = None) -> dict[str, Any]:
    """The exported-config document for the study's best trial (`prefer="cheapest"`: the cheapest
    trial among the best and those within noise of it), with the ties and the search's facts
    (`storage`, the study's, adds its wall budget)."""
    from .._model_card import search_facts
    from ._ties import preferred_trial

    best_trial(study)  # the one-line error when nothing completed
    trial, ties = preferred_trial(study.get_trials(deepcopy=False), settings.direction, prefer)
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
    document["ties"] = {**ties.section(), "exported": "the best trial" if trial.number == ties.best
                        else f"the cheapest of the best and its ties (trial {trial.number}, by wall-clock seconds)"}
    # What the model card of `train --final` says about the search, so it needs no storage.
    document["search"] = search_facts(study, settings, within_noise=None if ties.reason else len(ties.within),
                                      storage=storage)
    if trial.number != ties.best:
        document["search"]["selected_how"] = (f"the cheapest (by wall-clock seconds) of the best trial {ties.best} "
                                              "and the trials within noise of it")
    return document


def check_output_path(path: str | Path, option: str, *, suffix: str | None = None) -> Path:
    """Refuse an output path that cannot be written (a file where a folder must be, a folder
    where the file goes, a wrong suffix) before any work; missing folders are created on write."""
    path = Path(path).expanduser()
    if suffix and path.suffix != suffix:
        raise MedsweepError(f"{option} {path} must end in {suffix}; pass e.g. {option} model{suffix}")
    if path.is_dir():
        raise MedsweepError(f"{option} {path} is a folder; pass a file name inside it, e.g. {path / ('model' + (suffix or '.yaml'))}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MedsweepError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
            if not os.access(parent, os.W_OK):
                raise MedsweepError(f"{option} {path}: folder {parent} is not writable; choose another path")
            break
    return path


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
    path = check_output_path(path, "-o")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(document))
    except OSError as error:
        raise MedsweepError(f"cannot write {path} ({error.strerror}); choose another -o") from None
    return path


def read_export(path: str | Path) -> tuple[TrialConfig, dict[str, Any]]:
    """Read an exported config (or a bare TrialConfig mapping) and validate its config."""
    path = Path(path)
    document = load_yaml_file(path, "config file", "pass the file `medsweep export` wrote", MedsweepError)
    if not isinstance(document, dict):
        raise MedsweepError(f"config file {path} must be a mapping; pass the file `medsweep export` wrote")
    version = document.get("medsweep_export")
    if "medsweep_export" in document and (isinstance(version, bool) or not isinstance(version, int)
                                          or not 1 <= version <= EXPORT_FORMAT):
        # A later format may change what a field means: reading it as this one would train the wrong thing.
        raise MedsweepError(f"config file {path} has export format {quoted(version)}; this medsweep reads format "
                            f"{EXPORT_FORMAT}: upgrade medsweep, or export the study again with this one")
    raw = document.get("config", document) if "medsweep_export" in document else document
    try:
        return TrialConfig.from_dict(raw), document
    except ObjectiveError as error:
        raise MedsweepError(f"config file {path}: {error}") from None
