"""Retraining an exported config into a saved model, one pipeline for both `medsweep train`
(a data folder, validated on --val-dir when given) and `medsweep train --final` (every non-test
image of the study, then the locked test set measured once and written into the export, and the
model card MODEL.card.md beside the model). Both record which images trained and selected the
model (by content hash), so `evaluate` can tell when it is shown them again.

`--final --calibrate` fits temperature scaling on validation outputs only: the model trains on the
study's own validation split's training part (the first fold's, for a cross-validated study), T is
fitted on the held-out validation images, and the locked test set is measured before and after."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medsweep.objectives import ObjectiveError, TrialConfig
from medsweep.objectives.images import DataSpec, ImageDataset

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
    calibration: dict[str, Any] | None = None
    card_path: Path | None = None
    # What the user must not miss: constant outputs or one class for every image, a calibration
    # left at T = 1. Printed as `warning:` lines, kept in the model's metadata and in its card.
    warnings: list[str] = field(default_factory=list)


# The names each command's result had before the two pipelines became one.
TrainedModel = RetrainedModel
FinalModel = RetrainedModel


def retrain(export_path: str | Path, output: str | Path, *, data_dir: str | None = None,
            val_dir: str | None = None, final: bool = False, remeasure: bool = False,
            bootstrap: int = 1000, verbose: int = 0, calibrate: bool = False, ensemble: int = 0) -> RetrainedModel:
    """Read the export, open and check the data, train, (with `final`) measure the locked test
    set once, save the model with its metadata; the steps both kinds of retraining share.

    `ensemble` K >= 2 (with `final`) trains K fold models instead of one (each on all but one of
    K folds of the final model's images: the study's own folds when it cross-validated with K)
    and saves their average, measured once on the locked test set under its own record
    (`ensemble_test` in the export), so the single model's measurement stays as it was."""
    from medsweep.objectives import train_trial
    from medsweep.objectives.evaluation import SEEN_IMAGES_KEY
    from medsweep.objectives.images import TrialData
    from medsweep.objectives.model import save_model

    if calibrate and not final:
        raise MedsweepError("--calibrate needs --final: temperature scaling is fitted on the study's validation "
                            "images and checked on its locked test set")
    if ensemble and not final:
        raise MedsweepError("--ensemble needs --final: the ensemble is measured once on the study's locked test set")
    if ensemble and (ensemble < 2 or ensemble > MAX_ENSEMBLE):
        raise MedsweepError(f"--ensemble {ensemble} must be between 2 and {MAX_ENSEMBLE} members")
    if ensemble and calibrate:
        raise MedsweepError("--ensemble and --calibrate cannot be combined: temperature scaling is fitted on one "
                            "model's held-out validation images; calibrate a single final model")
    config, document = read_export(export_path)
    test_key = "ensemble_test" if ensemble else "test"
    if final:
        spec = _study_spec(export_path, document, data_dir, remeasure, test_key)
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
    members = None
    if ensemble:
        # The members decode their own folds (`member_folds`); the pooled out-of-fold outputs
        # are checked for constant output as a single model's validation outputs are.
        result, members, held_out = _train_members(config, dataset, size, ensemble, verbose)
        model = result.model
        trained_images = int(len(dataset.plan.development))
        warnings = _output_warnings(result, model, None, dataset.class_names, final, held_out)
    else:
        if calibrate or (val_dir and not final):
            # --calibrate holds the study's validation images out to fit the temperature on.
            data = dataset.arrays(size)
        else:
            # Every image the search could use; `all_arrays` never includes a locked test split.
            images, labels = dataset.all_arrays(size)
            data = TrialData(dataset.class_names, images, labels, images[:0], labels[:0])
        result = train_trial(config, data, keep_model=True, verbose=verbose)
        model = result.model
        trained_images = int(len(data.y_train))
        warnings = _output_warnings(result, model, data, dataset.class_names, final, data.y_val)
    threshold_section = (document.get("threshold") or None) if final else None
    calibration = None
    if calibrate:
        model, calibration, threshold_section = _calibrate(model, result.outputs, data.y_val, dataset, size,
                                                           threshold_section)
        if calibration.get("skipped"):
            warnings.append(f"--calibrate kept T = 1 (probabilities unchanged): {calibration['skipped']}")
    test = _measure_test(model, dataset, size, threshold_section, output, bootstrap) if final else None
    if test is not None and test.get("warning"):
        warnings.insert(0, test["warning"])
    metadata = _model_metadata(config, dataset, spec, document, result.metrics, trained_images)
    metadata[SEEN_IMAGES_KEY] = _seen_images(dataset, final=final, held_out=calibrate or bool(val_dir))
    if warnings:
        metadata["warnings"] = warnings
    if final:
        metadata.update(threshold=threshold_section, test=test, calibration=calibration)
    if members is not None:
        metadata["ensemble"] = members
    path = save_model(model, output, metadata)
    card_path = None
    if final:
        document[test_key] = test
        if calibration is not None:
            document["calibration"] = calibration
            document["threshold"] = threshold_section
        write_export(document, export_path)
        card_path = write_model_card(path, document, metadata, dataset, calibration)
    return RetrainedModel(path, result.metrics, result.history, notes, trained_images, test,
                          Path(export_path) if final else None, calibration, card_path, warnings)


MAX_ENSEMBLE = 10


def _train_members(config: TrialConfig, dataset: ImageDataset, size: int, k: int,
                   verbose: int) -> tuple[Any, dict[str, Any], Any]:
    """K fold models of `config` and their average: (a result holding the ensemble model and the
    members' pooled out-of-fold outputs, the metadata's `ensemble` section, the labels of those
    outputs). Each image is
    predicted once by the member that did not train on it, so the out-of-fold metrics estimate
    the members without touching the locked test set."""
    import numpy as np

    from medsweep.objectives import TrialResult, train_trial
    from medsweep.objectives.metrics import classification_metrics
    from medsweep.objectives.model import average_models

    try:
        folds = dataset.member_folds(size, k, seed=config.seed)
    except ObjectiveError as error:
        raise MedsweepError(f"--ensemble {k}: {error}") from None
    models, labels, outputs, fold_metrics = [], [], [], []
    for number, fold in enumerate(folds, start=1):
        member = train_trial(config.replace(seed=config.seed + number - 1), fold, keep_model=True, verbose=verbose)
        models.append(member.model)
        if member.outputs is not None:
            labels.append(np.asarray(fold.y_val))
            outputs.append(np.asarray(member.outputs))
            fold_metrics.append(member.metrics)
    if not outputs:
        raise MedsweepError(f"--ensemble {k}: no member had held-out images to predict; the study's data is too "
                            "small for an ensemble, retrain a single final model")
    model = average_models(models)
    y, p = np.concatenate(labels), np.concatenate(outputs)
    out_of_fold = classification_metrics(y, p, list(dataset.class_names))
    section = {"members": k, "kind": "fold models (each trained on all but one of K folds), probabilities averaged",
               "seeds": [config.seed + i for i in range(k)], "out_of_fold": out_of_fold,
               "fold_sizes": [int(len(f.y_train)) for f in folds]}
    return TrialResult(config, {}, out_of_fold, model, outputs=p), section, y


def _output_warnings(result: Any, model: Any, data: Any, class_names: Any, final: bool, held_out: Any) -> list[str]:
    """The constant-output warning on the held-out outputs (`held_out`: their labels; validation
    images, or an ensemble's pooled out-of-fold images) when there are any, else, for a plain
    `train`, on the training images of `data` (`--final` checks its test images instead)."""
    from medsweep.objectives.evaluation import predict_probabilities
    from medsweep.objectives.metrics import constant_output_warning

    if result.outputs is not None and len(held_out):
        warning = constant_output_warning(result.outputs, "validation images", list(class_names), labels=held_out)
    elif not final and data is not None and len(data.y_train):
        # Predicted in chunks: training images may be memory-mapped from disk.
        import numpy as np

        outputs = np.concatenate([predict_probabilities(model, np.asarray(data.x_train[start:start + 256]))
                                  for start in range(0, len(data.y_train), 256)])
        warning = constant_output_warning(outputs, "training images", list(class_names), labels=data.y_train)
    else:
        warning = None
    return [warning] if warning else []


def held_out_split(dataset: ImageDataset) -> tuple[list[Path], list[Path]]:
    """(training, validation) files of `dataset.arrays`: the --val-dir, the study's validation
    split or its first fold."""
    paths = dataset.train_files.paths
    if dataset.val_files is not None:
        return [paths[i] for i in dataset.plan.development], list(dataset.val_files.paths)
    train_index, val_index = dataset.plan.validation if dataset.plan.validation is not None else dataset.plan.folds[0]
    return [paths[i] for i in train_index], [paths[i] for i in val_index]


def _seen_images(dataset: ImageDataset, *, final: bool, held_out: bool) -> dict[str, list[str]]:
    """The model's SEEN_IMAGES_KEY section: what trained it, and (final) what selected it."""
    from medsweep.objectives.evaluation import final_model_seen_images, seen_image_hashes

    if final and not held_out:
        return final_model_seen_images(dataset)
    if held_out:
        trained, validation = held_out_split(dataset)
    else:
        trained = [dataset.train_files.paths[i] for i in dataset.plan.development]
        validation = []
    # A final model's configuration was selected on the search's validation images (and its
    # temperature on the held-out ones); a plain `train` model was selected on nothing here.
    selected = validation + _search_validation(dataset) if final else []
    return seen_image_hashes(trained, selected)


def _search_validation(dataset: ImageDataset) -> list[Path]:
    paths = dataset.train_files.paths
    if dataset.val_files is not None:
        return list(dataset.val_files.paths)
    if dataset.plan.validation is not None:
        return [paths[i] for i in dataset.plan.validation[1]]
    return [paths[i] for i in sorted({int(i) for _, fold in dataset.plan.folds for i in fold})]


def _calibrate(model: Any, validation_outputs: Any, validation_labels: Any, dataset: ImageDataset, size: int,
               threshold_section: dict[str, Any] | None) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Fit T on the held-out validation outputs, report Brier and ECE before and after on them and on
    the locked test set, append the temperature layer, and move the threshold with the probabilities."""
    import numpy as np

    from medsweep.objectives.evaluation import predict_probabilities
    from medsweep.objectives.metrics import apply_temperature, temperature_report
    from medsweep.objectives.model import with_temperature

    if validation_outputs is None or not len(validation_labels):
        raise MedsweepError("--calibrate needs validation images; the study has none to fit the temperature on")
    x_test, y_test = dataset.test_arrays(size)
    test_outputs = predict_probabilities(model, x_test)
    try:
        report = temperature_report(validation_labels, validation_outputs, y_test, test_outputs)
    except ObjectiveError as error:
        raise MedsweepError(f"--calibrate: {error}") from None
    report["validation_images"] = int(len(validation_labels))
    report["fitted_on"] = ("the study's validation split" if dataset.plan.validation is not None or dataset.val_files
                           is not None else "the first cross-validation fold's validation images")
    if report.get("skipped"):
        return model, report, threshold_section  # T = 1: the model and its threshold stay as they are
    temperature = report["temperature"]
    if threshold_section and len(dataset.class_names) == 2:
        # Temperature scaling is monotonic: mapping the threshold keeps every decision unchanged.
        before = float(threshold_section["value"])
        after = float(apply_temperature(np.array([[1.0 - before, before]]), temperature)[0, 1])
        threshold_section = {**threshold_section, "value": after, "before_calibration": before}
    return with_temperature(model, temperature), report, threshold_section


def model_card_path(model_path: str | Path) -> Path:
    """MODEL.card.md beside MODEL.keras."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".card.md")


def write_model_card(model_path: Path, document: dict[str, Any], metadata: dict[str, Any], dataset: ImageDataset,
                     calibration: dict[str, Any] | None) -> Path:
    """MODEL.card.md beside the model, from the export, the model's metadata and the data."""
    from .._model_card import card_facts, render_model_card

    facts = card_facts(document, metadata, model_file=model_path.name, dataset=dataset,
                       search=document.get("search"), calibration=calibration,
                       explanation={"method": "Grad-CAM",
                                    "where": "`medsweep explain MODEL IMAGE... -o DIR` and `medsweep report --model`"})
    card = model_card_path(model_path)
    try:
        card.write_text(render_model_card(facts))
    except OSError as error:
        raise MedsweepError(f"cannot write the model card {card} ({error.strerror}); choose another -o") from None
    return card


def train_from_export(export_path: str | Path, data_dir: str, output: str | Path, *,
                      val_dir: str | None = None, verbose: int = 0) -> RetrainedModel:
    """Retrain an exported config on `data_dir` (all of it, or validated on `val_dir`) and save it."""
    return retrain(export_path, output, data_dir=data_dir, val_dir=val_dir, verbose=verbose)


def train_final(export_path: str | Path, output: str | Path, *, data_dir: str | None = None,
                remeasure: bool = False, bootstrap: int = 1000, verbose: int = 0,
                calibrate: bool = False, ensemble: int = 0) -> RetrainedModel:
    """Retrain on every image the search could use (one model, or an `ensemble` of fold models),
    then measure the locked test set once."""
    return retrain(export_path, output, data_dir=data_dir, final=True, remeasure=remeasure,
                   bootstrap=bootstrap, verbose=verbose, calibrate=calibrate, ensemble=ensemble)


def refuse_second_measurement(export_path: str | Path, document: dict[str, Any], remeasure: bool,
                              test_key: str = "test") -> None:
    """`--final` on an export whose locked test is already measured (by this kind of model) is an
    error unless --remeasure; `train` checks it before its outputs, so a repeated command names
    the measurement, not the model file it would replace."""
    previous = document.get(test_key)
    if isinstance(previous, dict) and previous.get("measured") and not remeasure:
        which = "by an ensemble of this config" if test_key == "ensemble_test" else ""
        raise MedsweepError(
            f"the test set of {export_path} was already measured {which + ' ' if which else ''}at "
            f"{previous.get('measured_at')}; a second measurement after acting on the first is optimistic; pass "
            "--remeasure to overwrite it anyway"
        )


def _study_spec(export_path: str | Path, document: dict[str, Any], data_dir: str | None,
                remeasure: bool, test_key: str = "test") -> DataSpec:
    """The study's own DataSpec from the export (its data moved to `data_dir` if given)."""
    if "data" not in document:
        raise MedsweepError(f"{export_path} is not a study export (no data section); --final needs the file "
                            "`medsweep export` wrote")
    refuse_second_measurement(export_path, document, remeasure, test_key)
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
    from medsweep.objectives.evaluation import predict_probabilities
    from medsweep.objectives.metrics import bootstrap_intervals, classification_metrics, constant_output_warning

    x_test, y_test = dataset.test_arrays(size)
    probabilities = predict_probabilities(model, x_test)
    threshold = threshold_section["value"] if threshold_section else None
    class_names = list(dataset.class_names)
    warning = constant_output_warning(probabilities, "test images", class_names, threshold, y_test)
    return {
        "locked": True, "measured": True,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": int(len(y_test)), "model": str(Path(output)),
        "metrics": classification_metrics(y_test, probabilities, class_names, threshold=threshold),
        "ci95": bootstrap_intervals(y_test, probabilities, class_names, resamples=bootstrap, threshold=threshold)
        if bootstrap else {},
        "note": "measured once, after the search, by `medsweep train --final`; no trial saw these images",
        **({"warning": warning} if warning else {}),
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
