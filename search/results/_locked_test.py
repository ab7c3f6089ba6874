"""`medsweep evaluate MODEL --test`: measure a model on its own study's locked test split, found
through the model's metadata (`source.study`) and the storage, under the measured-once rule of
`train --final`: a test already measured is shown, not measured again, unless --remeasure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medsweep.objectives import DataError, ObjectiveError
from medsweep.objectives.images import ImageDataset, LabeledFiles
from medsweep.objectives.model import read_model_metadata

from .._errors import MedsweepError
from ..study._data import resolved_path


@dataclass
class LockedTest:
    """The locked test's figures; `stored` when they were read back, not measured now."""

    study: str
    test: dict[str, Any]
    stored: bool
    seen_line: str = ""
    reliability: dict[str, Any] | None = None


def study_of_model(model_file: str | Path) -> tuple[dict[str, Any], str]:
    """The model's metadata and the name of the study it came from (no TensorFlow)."""
    metadata = read_model_metadata(model_file)
    study = (metadata.get("source") or {}).get("study")
    if not study:
        raise MedsweepError(f"{model_file} does not name the study it came from (trained from a bare config); "
                            "--test needs a model trained from the file `medsweep export` wrote; use --data instead")
    return metadata, str(study)


def stored_test(metadata: dict[str, Any], remeasure: bool) -> dict[str, Any] | None:
    """The test figures the model already carries, unless the user asks to measure again."""
    test = metadata.get("test") or {}
    return test if test.get("measured") and not remeasure else None


def open_test_split(settings: Any, metadata: dict[str, Any], study: str, data_dir: str | None) -> ImageDataset:
    """The study's dataset (its data moved to `data_dir` if given), refusing a study without a locked
    test split or whose images changed (the split would move)."""
    spec = settings.data
    try:
        if data_dir:
            if spec.manifest:
                raise MedsweepError("this study reads a manifest; --data cannot move it")
            spec = replace(spec, data_dir=resolved_path(data_dir))
        if not spec.has_test_split:
            raise MedsweepError(f"study {study!r} has no locked test split; evaluate on a folder with --data instead")
        dataset = ImageDataset.open(spec)
    except ObjectiveError as error:
        raise MedsweepError(f"study {study!r}: {error}") from None
    if dataset.fingerprint.get("content_hash") != (settings.fingerprint or {}).get("content_hash"):
        raise MedsweepError(f"the images of study {study!r} changed since it was created, so its locked test split "
                            "would differ; point --data at the study's original data")
    if list(dataset.class_names) != list(metadata.get("class_names") or []):
        raise MedsweepError(f"the model's classes {metadata.get('class_names')} differ from study {study!r}'s "
                            f"{list(dataset.class_names)}; evaluate a model trained on this study")
    return dataset


def test_files(dataset: ImageDataset) -> LabeledFiles:
    """The locked test split's files (no decoding)."""
    if dataset.test_files is not None:
        return dataset.test_files
    return dataset.train_files.subset([int(i) for i in dataset.plan.test])


def measure_locked_test(model_file: str | Path, metadata: dict[str, Any], dataset: ImageDataset, study: str, *,
                        bootstrap: int, seed: int, exclude_seen: bool) -> LockedTest:
    """Predict the locked test images, measure with bootstrap intervals at the model's threshold,
    and write the figures into the model so the next `evaluate --test` shows them."""
    from medsweep.objectives.evaluation import measure_files, seen_images
    from medsweep.objectives.metrics import constant_output_warning

    files = test_files(dataset)
    seen = seen_images(metadata, files)
    seen_line = seen.describe(excluded=exclude_seen)
    if exclude_seen and seen.known:
        if not seen.unseen:
            raise DataError(f"all {seen.total} locked test images of study {study!r} trained or selected {model_file}; "
                            "its test figures cannot be measured honestly")
        files = files.subset(seen.unseen)
    measured = measure_files(model_file, files, dataset.spec.decoding,
                             threshold=(metadata.get("threshold") or {}).get("value"), resamples=bootstrap, seed=seed)
    test = {
        "locked": True, "measured": True,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": int(len(measured.labels)), "model": str(Path(model_file)),
        "metrics": measured.metrics,
        "ci95": measured.intervals,
        "seen": seen_line if seen.known and seen.seen else "",
        "note": f"measured by `medsweep evaluate --test` on study {study!r}'s locked test split",
    }
    warning = constant_output_warning(measured.probabilities, "test images", list(files.class_names),
                                      measured.threshold, measured.labels)
    if warning:
        test["warning"] = warning
    update_model_metadata(model_file, {**metadata, "test": test})
    return LockedTest(study, test, stored=False, seen_line=seen_line, reliability=measured.reliability)


def update_model_metadata(model_file: str | Path, metadata: dict[str, Any]) -> None:
    """Write the test figures into the model file (objectives' `update_model_metadata`)."""
    from medsweep.objectives.model import update_model_metadata as update

    try:
        update(model_file, metadata)
    except OSError as error:
        raise MedsweepError(f"cannot record the test figures in {model_file} ({error.strerror}); is the folder "
                            "writable?") from None
