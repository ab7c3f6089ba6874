"""Exported configs: the best trial as YAML (config, metrics, study, trial, data fingerprint,
versions), and retraining a final model from such a file."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from objectives import DataSpec, ImageDataset, ObjectiveError, TrialConfig, TrialData

from .._errors import MedsweepError, StudyError
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
        "config": trial.user_attrs["config"],
        "metrics": trial.user_attrs.get("metrics", {}),
        "objective": {"metric": settings.metric, "direction": settings.direction, "value": trial.value},
        "study": study.study_name,
        "trial": trial.number,
        "data": {**settings.data.to_dict(), "fingerprint": settings.fingerprint},
        "versions": package_versions(),
    }
    from ._trust import trust_sections

    document.update(trust_sections(trial, settings))
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


def write_export(document: dict[str, Any], path: str | Path) -> Path:
    path = check_output_path(path, "-o")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    except OSError as error:
        raise MedsweepError(f"cannot write {path} ({error.strerror}); choose another -o") from None
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


@dataclass
class TrainedModel:
    path: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    notes: list[str]


def train_from_export(export_path: str | Path, data_dir: str, output: str | Path, *,
                      val_dir: str | None = None, verbose: int = 0) -> TrainedModel:
    """Retrain an exported config on `data_dir` (all of it, or validated on `val_dir`) and save it."""
    from objectives import save_model, train_trial

    config, document = read_export(export_path)
    # The study's decoding (window) and skip choice, so the model sees pixels as the trials did.
    spec = DataSpec(data_dir=data_dir, val_dir=val_dir, **DataSpec.reading_options(document.get("data") or {}))
    dataset = ImageDataset.open(spec)
    notes: list[str] = [dataset.unread_report()] if dataset.unread_report() else []
    if (document.get("test") or {}).get("locked"):
        notes.append("the study locked a test split; this trains on every image in --data, test images "
                     "included; use --final to keep them out and measure them once")
    exported_data = document.get("data", {}).get("fingerprint")
    if exported_data:
        if list(exported_data["class_names"]) != list(dataset.class_names):
            raise MedsweepError(
                f"the data's classes {list(dataset.class_names)} differ from the exported study's "
                f"{exported_data['class_names']}; train on data with the same class folders"
            )
        if exported_data["content_hash"] != dataset.fingerprint["content_hash"]:
            notes.append("the images differ from the ones the study searched on (fingerprint changed)")
    size = config.resolved_image_size
    if val_dir:
        data = dataset.arrays(size)
    else:
        images, labels = dataset.all_arrays(size)
        data = TrialData(dataset.class_names, images, labels, images[:0], labels[:0])
    result = train_trial(config, data, keep_model=True, verbose=verbose)
    model_metadata = {
        "class_names": list(dataset.class_names),
        "config": config.to_dict(),
        "fingerprint": dataset.fingerprint,
        "trained_on": data_dir,
        "validation_metrics": result.metrics,
        "source": {k: document.get(k) for k in ("study", "trial", "objective") if k in document},
        "versions": package_versions(),
    }
    path = save_model(result.model, output, model_metadata)
    return TrainedModel(path, result.metrics, result.history, notes)
