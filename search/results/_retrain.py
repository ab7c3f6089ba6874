"""Retraining an exported config into a saved model, one pipeline for both `medsweep train`
(a data folder, validated on --val-dir when given) and `medsweep train --final` (every non-test
image of the study, then the locked test set measured once and written into the export)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from objectives import DataSpec, ImageDataset, ObjectiveError, TrialConfig

from .._errors import MedsweepError
from ..study._data import resolved_path
from ._export import package_versions, read_export, write_export


@dataclass
class RetrainedModel:
    """What a retraining produced; `test` and `export_path` are set by `--final` only."""

    path: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    notes: list[str]
    trained_images: int
    test: dict[str, Any] | None = None
    export_path: Path | None = None


# The names each command's result had before the two pipelines became one.
TrainedModel = RetrainedModel
FinalModel = RetrainedModel


def retrain(export_path: str | Path, output: str | Path, *, data_dir: str | None = None,
            val_dir: str | None = None, final: bool = False, remeasure: bool = False,
            bootstrap: int = 1000, verbose: int = 0) -> RetrainedModel:
    """Read the export, open and check the data, train, (with `final`) measure the locked test
    set once, save the model with its metadata; the steps both kinds of retraining share."""
    from objectives import TrialData, save_model, train_trial

    config, document = read_export(export_path)
    if final:
        spec = _study_spec(export_path, document, data_dir, remeasure)
    elif not data_dir:
        raise MedsweepError("pass --data FOLDER, or --final to train on the study's own data")
    else:
        # The study's decoding (window) and skip choice, so the model sees pixels as the trials did.
        spec = DataSpec(data_dir=data_dir, val_dir=val_dir, **DataSpec.reading_options(document.get("data") or {}))
    dataset = ImageDataset.open(spec)
    notes = _check_data(document, dataset, spec, final)
    if dataset.unread_report():
        notes.insert(0, dataset.unread_report())
    size = config.resolved_image_size
    if val_dir and not final:
        data = dataset.arrays(size)
    else:
        # Every image the search could use; `all_arrays` never includes a locked test split.
        images, labels = dataset.all_arrays(size)
        data = TrialData(dataset.class_names, images, labels, images[:0], labels[:0])
    result = train_trial(config, data, keep_model=True, verbose=verbose)
    trained_images = int(len(data.y_train))
    threshold_section = (document.get("threshold") or None) if final else None
    test = _measure_test(result.model, dataset, size, threshold_section, output, bootstrap) if final else None
    metadata = _model_metadata(config, dataset, spec, document, result.metrics, trained_images)
    if final:
        metadata.update(threshold=threshold_section, test=test)
    path = save_model(result.model, output, metadata)
    if final:
        document["test"] = test
        write_export(document, export_path)
    return RetrainedModel(path, result.metrics, result.history, notes, trained_images, test,
                          Path(export_path) if final else None)


def train_from_export(export_path: str | Path, data_dir: str, output: str | Path, *,
                      val_dir: str | None = None, verbose: int = 0) -> RetrainedModel:
    """Retrain an exported config on `data_dir` (all of it, or validated on `val_dir`) and save it."""
    return retrain(export_path, output, data_dir=data_dir, val_dir=val_dir, verbose=verbose)


def train_final(export_path: str | Path, output: str | Path, *, data_dir: str | None = None,
                remeasure: bool = False, bootstrap: int = 1000, verbose: int = 0) -> RetrainedModel:
    """Retrain on every image the search could use, then measure the locked test set once."""
    return retrain(export_path, output, data_dir=data_dir, final=True, remeasure=remeasure,
                   bootstrap=bootstrap, verbose=verbose)


def _study_spec(export_path: str | Path, document: dict[str, Any], data_dir: str | None,
                remeasure: bool) -> DataSpec:
    """The study's own DataSpec from the export (its data moved to `data_dir` if given)."""
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
            spec = replace(spec, data_dir=resolved_path(data_dir))
    except ObjectiveError as error:
        raise MedsweepError(f"{export_path}: {error}") from None
    if not spec.has_test_split:
        raise MedsweepError(
            f"study {document.get('study')!r} has no locked test split; create the study with --test-fraction "
            "or --test-dir so a final model can be measured once on images no trial saw"
        )
    return spec


def _check_data(document: dict[str, Any], dataset: ImageDataset, spec: DataSpec, final: bool) -> list[str]:
    """Compare the data with the export's fingerprint: a change is an error for `--final` (the
    locked test split would move) and a note otherwise."""
    notes: list[str] = []
    expected = (document.get("data") or {}).get("fingerprint") or {}
    if final:
        if expected and expected.get("content_hash") != dataset.fingerprint["content_hash"]:
            raise MedsweepError(
                f"the images in {spec.manifest or spec.data_dir} differ from the ones the study searched on, so the "
                "locked test split would differ too; point --data at the study's data"
            )
        return notes
    if (document.get("test") or {}).get("locked"):
        notes.append("the study locked a test split; this trains on every image in --data, test images "
                     "included; use --final to keep them out and measure them once")
    if expected:
        if list(expected["class_names"]) != list(dataset.class_names):
            raise MedsweepError(
                f"the data's classes {list(dataset.class_names)} differ from the exported study's "
                f"{expected['class_names']}; train on data with the same class folders"
            )
        if expected["content_hash"] != dataset.fingerprint["content_hash"]:
            notes.append("the images differ from the ones the study searched on (fingerprint changed)")
    return notes


def _measure_test(model: Any, dataset: ImageDataset, size: int, threshold_section: dict[str, Any] | None,
                  output: str | Path, bootstrap: int) -> dict[str, Any]:
    """The locked test set's metrics with bootstrap intervals, at the export's threshold."""
    from objectives import bootstrap_intervals, classification_metrics, predict_probabilities

    x_test, y_test = dataset.test_arrays(size)
    probabilities = predict_probabilities(model, x_test)
    threshold = threshold_section["value"] if threshold_section else None
    class_names = list(dataset.class_names)
    return {
        "locked": True, "measured": True,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": int(len(y_test)), "model": str(Path(output)),
        "metrics": classification_metrics(y_test, probabilities, class_names, threshold=threshold),
        "ci95": bootstrap_intervals(y_test, probabilities, class_names, resamples=bootstrap, threshold=threshold)
        if bootstrap else {},
        "note": "measured once, after the search, by `medsweep train --final`; no trial saw these images",
    }


def _model_metadata(config: TrialConfig, dataset: ImageDataset, spec: DataSpec, document: dict[str, Any],
                    validation_metrics: dict[str, Any], trained_images: int) -> dict[str, Any]:
    """What the saved model carries so one file is enough to predict and to trace it back."""
    return {
        "class_names": list(dataset.class_names),
        "config": config.to_dict(),
        "fingerprint": dataset.fingerprint,
        "trained_on": spec.manifest or spec.data_dir,
        "trained_images": trained_images,
        "validation_metrics": validation_metrics,
        "source": {k: document.get(k) for k in ("study", "trial", "objective", "cv") if k in document},
        "versions": package_versions(),
    }
