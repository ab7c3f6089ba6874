"""Cross-validated study on the survey's brain MRI set: each trial's mean and 95% interval over
5 folds x 2 repeats, a locked 20% test split measured once by the final model.

    python -m bench.cv_brain_mri [--trials 6] [--size 64] [--cv 5] [--repeats 2]

Uses MobileNet alpha 0.25 with the real ImageNet weights from ../shared/weights (frozen, so
trials train their head on cached features). Prints a table, then one line of JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "brain_mri"))
    parser.add_argument("--weights", default=str(SHARED / "weights"))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--workdir", default=None, help="Keep the study, export and model here (default: a temp folder).")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        sys.exit(f"bench: data folder {args.data} not found; pass --data (the survey's brain_mri folder)")
    weights = args.weights if Path(args.weights).is_dir() else "none"

    import optuna
    from optuna.trial import TrialState

    from medsweep.objectives.images import ImageDataset
    from medsweep.search import SearchSpace, create_study, export_best, load_study, run_worker, write_export
    from medsweep.search.results._retrain import train_final
    from medsweep.search.study._data import describe_dataset, make_data_spec
    from medsweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medsweep-cv-"))
    workdir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{workdir / 'cv.db'}")
    space = SearchSpace({
        "backbone": "MobileNet", "alpha": 0.25, "weights": weights, "image_size": args.size,
        "augmentation": False, "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "epochs": [10, 20], "batch_size": [8, 16], "dense_units": [64, 256],
    })
    spec = make_data_spec(args.data, cv=args.cv, repeats=args.repeats, test_fraction=args.test_fraction)
    dataset = ImageDataset.open(spec)
    print(f"data: {describe_dataset(dataset)}")
    name = f"cv-{args.cv}x{args.repeats}"
    create_study(storage, name, dataset, space, metric="auc", resume=True)
    started = time.perf_counter()
    run_worker(storage, name, n_trials=args.trials)
    search_seconds = time.perf_counter() - started
    study, settings = load_study(storage, name)

    print(f"\n{'trial':>5}  {'state':8}  {'AUC mean':>8}  {'95% CI':>16}  {'std':>6}  {'folds':>5}  {'s':>6}  params")
    rows = []
    for trial in study.trials:
        cv = trial.user_attrs.get("cv") or {}
        low, high = (cv.get("ci95") or [None, None])
        interval = f"[{low:.3f}, {high:.3f}]" if low is not None else ""
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        mean = cv.get("mean")
        print(f"{trial.number:>5}  {trial.state.name:8}  {mean if mean is None else f'{mean:.3f}':>8}  "
              f"{interval:>16}  {cv.get('std', 0):>6.3f}  {len(cv.get('folds', [])):>5}  {seconds:>6.1f}  {params}")
        rows.append({"trial": trial.number, "state": trial.state.name, "mean": mean, "ci95": cv.get("ci95"),
                     "std": cv.get("std"), "folds": len(cv.get("folds", [])), "seconds": round(seconds, 1)})

    export = write_export(export_best(study, settings), workdir / "best.yaml")
    started = time.perf_counter()
    final = train_final(export, workdir / "model.keras", remeasure=True)
    final_seconds = time.perf_counter() - started
    test = final.test["metrics"]
    intervals = final.test["ci95"]
    print(f"\nbest trial {study.best_trial.number}: CV AUC {study.best_value:.3f} "
          f"{study.best_trial.user_attrs['cv']['ci95']}; final model on {final.trained_images} images, "
          f"locked test set of {final.test['images']} images measured once:")
    for metric in ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"):
        print(f"  test {metric:18} {test[metric]:.3f}  95% CI {[round(v, 3) for v in intervals[metric]]}")
    figures = {
        "bench": "cv_brain_mri", "cv": args.cv, "repeats": args.repeats, "image_size": args.size,
        "weights": "imagenet" if weights != "none" else "none", "trials": rows,
        "completed": sum(r["state"] == TrialState.COMPLETE.name for r in rows),
        "pruned": sum(r["state"] == TrialState.PRUNED.name for r in rows),
        "best_trial": study.best_trial.number, "best_cv_auc": round(study.best_value, 4),
        "best_ci95": study.best_trial.user_attrs["cv"]["ci95"],
        "test_images": final.test["images"], "test_auc": round(test["auc"], 4),
        "test_auc_ci95": [round(v, 4) for v in intervals["auc"]],
        "duplicates": dataset.plan.groups.duplicate_files, "groups": dataset.plan.groups.group_count,
        "search_seconds": round(search_seconds, 1), "final_seconds": round(final_seconds, 1),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
