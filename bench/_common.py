"""Helpers the training benchmarks share: where the survey data and weights are, tables, the
one-line JSON result, per-epoch timing, and a small Optuna study over cached or uncached trials."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BRAIN_MRI = SHARED / "data" / "brain_mri"
WEIGHTS = SHARED / "weights"
MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"


def require_data(data: Path, weights: Path | None = None) -> None:
    """Exit with a one-line reason when the survey's data (or weights) are not there."""
    if not data.is_dir():
        sys.exit(f"bench: data folder {data} not found; pass --data (the survey's brain_mri folder)")
    if weights is not None and not (weights / MOBILENET_FILE).is_file():
        sys.exit(f"bench: {weights / MOBILENET_FILE} not found; pass --weights (a folder with the "
                 "MobileNet alpha 0.25 no-top ImageNet weights)")


def data_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the --data and --weights options every training benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=BRAIN_MRI)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    return parser


def parse_data_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the arguments and exit with a one-line reason when the data or weights are missing."""
    args = parser.parse_args()
    require_data(args.data, args.weights)
    return args


def open_split_dataset(data: Path) -> Any:
    """The benchmarks' data: the folder with a seeded, stratified 80/20 validation split."""
    from medsweep.objectives.images import DataSpec, ImageDataset

    return ImageDataset.open(DataSpec(str(data), validation_fraction=0.2, split_seed=0))


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def emit(result: dict[str, Any]) -> None:
    """The benchmark's last line: its figures as one line of JSON."""
    print(json.dumps({**result, "machine": machine()}, sort_keys=False, default=float), flush=True)


class EpochTimer:
    """A Keras callback (built lazily) that records each epoch's wall time."""

    def __new__(cls) -> Any:
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []
                self._start = 0.0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - self._start)

        return _Timer()


# Three backbones a CPU can search: the real pretrained MobileNet, and two random-init ones
# (VGG19's random features stay informative; ResNet50V2 is the larger network).
def study_backbones(weights: Path, size: int) -> dict[str, dict[str, Any]]:
    return {
        "MobileNet": {"backbone": "MobileNet", "alpha": 0.25, "weights": str(weights), "image_size": size},
        "VGG19": {"backbone": "VGG19", "weights": "none", "image_size": size},
        "ResNet50V2": {"backbone": "ResNet50V2", "weights": "none", "image_size": size},
    }


@dataclass
class StudyRun:
    """What one benchmark study did."""

    label: str
    wall_s: float = 0.0
    epochs: int = 0
    best: float = float("nan")
    states: dict[str, int] = field(default_factory=dict)
    trial_seconds: list[float] = field(default_factory=list)


def run_study(label: str, dataset: Any, backbones: dict[str, dict[str, Any]], *, trials: int, seed: int,
              pruner: str, feature_cache: bool, cache_dir: Path | None, epochs: tuple[int, int] | int,
              log: Callable[[str], None] = print) -> StudyRun:
    """A seeded Optuna study with medsweep's sampler and pruner over `backbones`, each trial a
    real `train_trial` with the Keras pruning callback, on validation AUC."""
    import optuna
    from optuna_integration.keras import KerasPruningCallback

    from medsweep.objectives import TrialConfig, train_trial
    from medsweep.objectives.training import EpochHistory
    from medsweep.search.study._strategy import make_pruner, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = StudyRun(label)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(seed), pruner=make_pruner(pruner))

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("backbone", list(backbones)) if len(backbones) > 1 else next(iter(backbones))
        values = dict(backbones[name])
        values.update(
            learning_rate=trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
            dense_units=trial.suggest_categorical("dense_units", [64, 128, 256, 512]),
            dropout=trial.suggest_float("dropout", 0.0, 0.6),
            batch_size=trial.suggest_categorical("batch_size", [5, 8, 16, 32]),
            epochs=epochs if isinstance(epochs, int) else trial.suggest_int("epochs", *epochs),
            augmentation=False, feature_cache=feature_cache, seed=0)
        config = TrialConfig(**values)
        data = dataset.arrays(config.resolved_image_size)
        recorder = EpochHistory()
        started = time.perf_counter()
        try:
            result = train_trial(config, data, [recorder, KerasPruningCallback(trial, "val_auc")],
                                 feature_cache_dir=cache_dir)
        finally:
            run.epochs += len(recorder.history.get("loss", []))
            run.trial_seconds.append(time.perf_counter() - started)
        return float(result.metrics["auc"])

    started = time.perf_counter()
    for number in range(trials):
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        last = study.trials[-1]
        log(f"  [{label}] trial {number:2d} {last.state.name.lower():8s} "
            f"value {last.value if last.value is not None else float('nan'):.3f}  "
            f"{run.trial_seconds[-1] if run.trial_seconds else 0:.1f} s")
    run.wall_s = time.perf_counter() - started
    for trial in study.trials:
        run.states[trial.state.name.lower()] = run.states.get(trial.state.name.lower(), 0) + 1
    completed = [t.value for t in study.trials if t.value is not None]
    run.best = max(completed) if completed else float("nan")
    return run
