"""A worker: runs trials of one study until the study's total budget or a time limit is
reached. Failed trials are recorded and skipped; N failures in a row stop the worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optuna.trial import FrozenTrial, TrialState

from medsweep.objectives.images import ImageDataset

from ._budget import budget_used  # noqa: F401  (re-exported by search)
from medsweep.storage import storage_lock

from .._errors import StudyError
from ._objective import TrialObjective
from ..study._data import check_stored_paths
from ..study._study import load_study, stored_file_hashes

_logger = logging.getLogger("medsweep.worker")


@dataclass
class WorkerSummary:
    trials: list[FrozenTrial] = field(default_factory=list)
    stop_reason: str = ""

    def count(self, state: TrialState) -> int:
        return sum(1 for t in self.trials if t.state == state)


def open_dataset(settings: Any, data_dir: str | None = None, val_dir: str | None = None,
                 stored_files: dict[str, str] | None = None, study_name: str = "") -> ImageDataset:
    """Open the study's data (or the same data under another path) and check its fingerprint;
    `stored_files` (the study's per-file hashes) lets a mismatch name the files."""
    spec = settings.data
    if not data_dir:
        check_stored_paths(spec, study_name)
    if data_dir:
        from dataclasses import replace

        if spec.manifest:  # the manifest names its images relative to its own folder
            manifest = Path(data_dir).expanduser()
            if manifest.is_dir():
                manifest = manifest / Path(spec.manifest).name
            spec = replace(spec, manifest=str(manifest), data_dir=str(manifest.parent))
        else:
            spec = replace(spec, data_dir=data_dir, val_dir=val_dir or spec.val_dir)
    dataset = ImageDataset.open(spec)
    if dataset.fingerprint["content_hash"] != settings.fingerprint["content_hash"]:
        raise StudyError(
            f"the images in {spec.manifest or spec.data_dir} differ from the ones the study was created with "
            f"({describe_changes(stored_files or {}, dataset.file_hashes, dataset.fingerprint['file_count'], settings.fingerprint['file_count'])}); "
            "point --data at the study's data or create a new study"
        )
    return dataset


def describe_changes(before: dict[str, str], after: dict[str, str], count_now: int, count_before: int,
                     shown: int = 3) -> str:
    """'changed: a.png, b.png; added: c.png' (first few of each), or the counts when the study
    stored no per-file list (created before medsweep kept one)."""
    if not before:
        return f"{count_now} files now, {count_before} when the study was created; the study keeps no file list"
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    parts = []
    for label, names in (("changed", changed), ("added", sorted(after.keys() - before.keys())),
                         ("removed", sorted(before.keys() - after.keys()))):
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(f"{label}: {', '.join(names[:shown])}{more}")
    return "; ".join(parts) or "same files, other labels or split"


def work_on_study(storage: Any, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
                  max_consecutive_failures: int = 3, max_retries: int = 2, data_dir: str | None = None,
                  val_dir: str | None = None, stop: Any = None, progress: Any = None,
                  on_trial: Callable[[FrozenTrial], None] | None = None, budget: float | None = None,
                  leave_at_deadline: bool = True, sampler_seed: int | None = None) -> Any:
    """The one worker pipeline behind `run_worker` and every `medsweep worker` process: load the
    study, open and check its data, start or join its wall budget and stage plan, and run the
    trial loop (`_loop.run_trials`: budget lock, heartbeats, retries, SIGTERM, fatal errors,
    the deadline) with the worker's Keras callbacks."""
    from ._budget import deadline_keras_callback
    from ._loop import StopRequest, run_trials, worker_keras_callback
    from ._plan import prepare_plan
    from ._progress import Progress

    stop = stop or StopRequest()
    progress = progress or Progress("quiet")
    if hasattr(storage, "give_up_when"):  # told to stop, the worker waits out an outage briefly, not 300 s
        storage.give_up_when(stop.event)
    study, settings = load_study(storage, study_name, sampler_seed=sampler_seed)
    dataset = open_dataset(settings, data_dir, val_dir, stored_file_hashes(storage, study_name), study_name)
    if settings.data.cv and dataset.plan is not None:
        progress.folds = len(dataset.plan.folds)
    wall, plan = prepare_plan(storage, study, settings, dataset, budget,
                              lambda: storage_lock(storage, f"budget:{study_name}"))
    callbacks = [worker_keras_callback(stop, progress)]
    if wall is not None:
        callbacks.append(deadline_keras_callback(wall))
    objective = TrialObjective(settings, dataset, callbacks=callbacks)
    return run_trials(storage, study, objective, n_trials=n_trials, timeout=timeout,
                      max_consecutive_failures=max_consecutive_failures, max_retries=max_retries,
                      stop=stop, progress=progress, on_trial=on_trial, budget=wall, plan=plan,
                      leave_at_deadline=leave_at_deadline)


def run_worker(storage: Any, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
               max_consecutive_failures: int = 3, data_dir: str | None = None, val_dir: str | None = None,
               on_trial: Callable[[FrozenTrial], None] | None = None, max_retries: int = 2,
               progress: Any = None, budget: float | None = None) -> WorkerSummary:
    """Run trials in this thread until the study has `n_trials` (all workers together), `timeout`
    passes or the study's wall budget is spent (`work_on_study` without signal handling, and
    without ending the caller's process at the deadline)."""
    loop = work_on_study(storage, study_name, n_trials=n_trials, timeout=timeout,
                         max_consecutive_failures=max_consecutive_failures, max_retries=max_retries,
                         data_dir=data_dir, val_dir=val_dir, progress=progress, on_trial=on_trial,
                         budget=budget, leave_at_deadline=False)
    return WorkerSummary(loop.trials, loop.stop_reason)
