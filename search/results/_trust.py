"""Trustworthy numbers at the search layer: the data spec from `medsweep create`'s options,
what an export says about cross-validation, thresholds and the locked test set, the final
model measured once on that test set, and `medsweep evaluate`'s table."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from objectives import DataSpec, ImageDataset, ObjectiveError, parse_objective

from .._errors import MedsweepError
from ..study._study import StudySettings


def _resolved(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def make_data_spec(data_dir: str | None, *, manifest: str | None = None, val_dir: str | None = None,
                   validation_fraction: float = 0.2, split_seed: int = 0, group_pattern: str | None = None,
                   cv: int = 0, repeats: int = 1, test_fraction: float = 0.0,
                   test_dir: str | None = None, group_by: str | None = None, window: str | None = None,
                   skip_unreadable: bool = False) -> DataSpec:
    """A DataSpec with absolute paths (stored on the study, read by workers elsewhere)."""
    if not data_dir and not manifest:
        raise MedsweepError("pass --data FOLDER (class subfolders) or --manifest FILE.csv (path,label[,group] rows)")
    if data_dir and manifest:
        raise MedsweepError("pass either --data or --manifest, not both; a manifest names its own image paths")
    if manifest:
        data_dir = str(Path(manifest).expanduser().resolve().parent)
    return DataSpec(_resolved(data_dir) or "", _resolved(val_dir), validation_fraction, split_seed,
                    manifest=_resolved(manifest), group_pattern=group_pattern, cv=cv, repeats=repeats,
                    test_fraction=test_fraction, test_dir=_resolved(test_dir), group_by=group_by,
                    window=window, skip_unreadable=skip_unreadable)


def describe_dataset(dataset: ImageDataset) -> str:
    """What `medsweep create` found: images, classes, duplicates and groups, splits, the window,
    and (on a line of its own) every file it did not read."""
    fingerprint = dataset.fingerprint
    plan = dataset.plan
    window = f"; window {dataset.spec.window[0]:g},{dataset.spec.window[1]:g}" if dataset.spec.window else ""
    text = (f"{fingerprint['file_count']} images, classes {', '.join(fingerprint['class_names'])}; "
            f"{plan.groups.describe()}; {plan.describe()}{window}")
    unread = dataset.unread_report()
    return f"{text}\n{unread}" if unread else text


def trust_sections(trial: optuna.trial.FrozenTrial, settings: StudySettings) -> dict[str, Any]:
    """The export's `cv`, `threshold` and `test` sections for the best trial."""
    sections: dict[str, Any] = {}
    if "cv" in trial.user_attrs:
        sections["cv"] = trial.user_attrs["cv"]
    target = parse_objective(settings.metric)[2]
    metrics = trial.user_attrs.get("metrics", {})
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


@dataclass
class FinalModel:
    path: Path
    export_path: Path
    test: dict[str, Any]
    trained_images: int
    notes: list[str]


def train_final(export_path: str | Path, output: str | Path, *, data_dir: str | None = None,
                remeasure: bool = False, bootstrap: int = 1000, verbose: int = 0) -> FinalModel:
    """Retrain the exported config on every image the search could use (never the locked test
    images), then measure the locked test set once and write the figures into the model and
    the export."""
    from objectives import (TrialData, bootstrap_intervals, classification_metrics, predict_probabilities,
                            save_model, train_trial)

    from ._export import package_versions, read_export, write_export

    config, document = read_export(export_path)
    if "data" not in document:
        raise MedsweepError(f"{export_path} is not a study export (no data section); --final needs the file "
                            "`medsweep export` wrote")
    previous = document.get("test") or {}
    if previous.get("measured") and not remeasure:
        raise MedsweepError(
            f"the test set of {export_path} was already measured at {previous.get('measured_at')}; a second "
            "measurement after acting on the first is optimistic; pass --remeasure to overwrite it anyway"
        )
    try:
        spec = DataSpec.from_dict(document["data"])
        if data_dir:
            if spec.manifest:
                raise MedsweepError("this study reads a manifest; --data cannot move it, edit the export's data.manifest")
            spec = replace(spec, data_dir=_resolved(data_dir))
    except ObjectiveError as error:
        raise MedsweepError(f"{export_path}: {error}") from None
    if not spec.has_test_split:
        raise MedsweepError(
            f"study {document.get('study')!r} has no locked test split; create the study with --test-fraction "
            "or --test-dir so a final model can be measured once on images no trial saw"
        )
    dataset = ImageDataset.open(spec)
    expected = document["data"].get("fingerprint", {})
    if expected and expected.get("content_hash") != dataset.fingerprint["content_hash"]:
        raise MedsweepError(
            f"the images in {spec.manifest or spec.data_dir} differ from the ones the study searched on, so the "
            "locked test split would differ too; point --data at the study's data"
        )
    size = config.resolved_image_size
    images, labels = dataset.all_arrays(size)
    data = TrialData(dataset.class_names, images, labels, images[:0], labels[:0])
    result = train_trial(config, data, keep_model=True, verbose=verbose)
    x_test, y_test = dataset.test_arrays(size)
    probabilities = predict_probabilities(result.model, x_test)
    threshold_section = document.get("threshold") or None
    threshold = threshold_section["value"] if threshold_section else None
    class_names = list(dataset.class_names)
    test = {
        "locked": True, "measured": True,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": int(len(y_test)), "model": str(Path(output)),
        "metrics": classification_metrics(y_test, probabilities, class_names, threshold=threshold),
        "ci95": bootstrap_intervals(y_test, probabilities, class_names, resamples=bootstrap, threshold=threshold)
        if bootstrap else {},
        "note": "measured once, after the search, by `medsweep train --final`; no trial saw these images",
    }
    metadata = {
        "class_names": class_names, "config": config.to_dict(), "fingerprint": dataset.fingerprint,
        "trained_on": spec.manifest or spec.data_dir, "trained_images": int(len(labels)),
        "threshold": threshold_section, "test": test,
        "source": {k: document.get(k) for k in ("study", "trial", "objective", "cv") if k in document},
        "versions": package_versions(),
    }
    path = save_model(result.model, output, metadata)
    document["test"] = test
    write_export(document, export_path)
    return FinalModel(path, Path(export_path), test, int(len(labels)), [])


_ORDER = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "loss")


def format_metrics(metrics: dict[str, Any], intervals: dict[str, list[float]]) -> str:
    """A metric / value / 95% interval table, then the confusion matrix."""
    names = [n for n in _ORDER if isinstance(metrics.get(n), float)]
    names += [n for n, v in metrics.items() if isinstance(v, float) and n not in names]
    width = max(len(n) for n in names) if names else 6
    lines = [f"{'metric'.ljust(width)}  value   95% CI (bootstrap)"]
    for name in names:
        low_high = intervals.get(name)
        interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
        lines.append(f"{name.ljust(width)}  {metrics[name]:.3f}   {interval}".rstrip())
    if "confusion_matrix" in metrics:
        lines.append(f"confusion matrix (rows true, columns predicted): {metrics['confusion_matrix']}")
    return "\n".join(lines)
