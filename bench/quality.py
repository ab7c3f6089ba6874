"""Model quality within a wall budget: medsweep's default budgeted search against the survey
template's recipe and a plain-Keras full fine-tune, on the same grouped folds.

    python -m bench.quality [--budget 30m] [--data brain_mri|open_i|PATH] [--baselines all|template|none]

brain_mri: MobileNet alpha 0.25 with the real ImageNet weights at 224 px, 5-fold CV grouped so
identical images stay together, a 20% locked test split measured once by the `train --final`
model. open_i: the TRAIN folder searched, its TEST images (one per class) predicted by the final
model. Prints load, the search's best CV AUC with its interval and depth, the baselines, the
locked-test AUC, then one line of JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ._baselines import cross_validate_plain_keras  # noqa: E402
from ._common import BRAIN_MRI, MOBILENET_FILE, SHARED, WEIGHTS, machine, table  # noqa: E402

OPEN_I = SHARED / "data" / "open_i_abd_vs_cxr"
IMAGE_SIZE = 224


def search_space(weights: str, image_size: int) -> dict[str, Any]:
    """The default space with the bench's backbone fixed (as a user with one backbone would)."""
    return {"backbone": "MobileNet", "alpha": 0.25, "weights": weights, "image_size": image_size}


def cross_validate(config: Any, dataset: Any) -> dict[str, Any]:
    """medsweep's own training path on every fold: the mean, its interval and the seconds."""
    from medsweep.objectives import train_trial
    from medsweep.objectives.metrics import cv_summary

    started = time.perf_counter()
    values, shares = [], []
    for data in dataset.folds(config.resolved_image_size):
        result = train_trial(config, data, [])
        values.append(float(result.metrics["auc"]))
        shares.append(len(data.y_val) / (len(data.y_val) + len(data.y_train)))
    summary = cv_summary(values, sum(shares) / len(shares), (0.0, 1.0))
    return {"mean": summary["mean"], "ci95": summary["ci95"], "folds": values,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="brain_mri", help="brain_mri, open_i, or a folder of class subfolders")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--budget", default="30m", help="The search's wall budget (30m, 5m, 1800s).")
    parser.add_argument("--workers", type=int, default=1, help="Worker processes sharing the budget.")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="Smaller for a quick check of the bench itself.")
    parser.add_argument("--baselines", choices=("all", "template", "none"), default="all")
    parser.add_argument("--baseline-epochs", type=int, default=20, help="Epochs of both baselines (the template's 20).")
    parser.add_argument("--workdir", default=None, help="Keep the study, export and model here (default: a temp folder).")
    args = parser.parse_args(argv)
    open_i = args.data == "open_i"
    data = OPEN_I / "TRAIN" if open_i else BRAIN_MRI if args.data == "brain_mri" else Path(args.data)
    if not data.is_dir():
        sys.exit(f"bench: data folder {data} not found; pass --data brain_mri, open_i or a folder")
    if not (args.weights / MOBILENET_FILE).is_file():
        sys.exit(f"bench: {args.weights / MOBILENET_FILE} not found; pass --weights (the MobileNet alpha 0.25 "
                 "no-top ImageNet weights)")

    import optuna

    from medsweep.objectives import TrialConfig
    from medsweep.objectives.evaluation import predict_files
    from medsweep.objectives.images import ImageDataset
    from medsweep.search import SearchSpace, create_study, export_best, load_study, write_export
    from medsweep.search.results._retrain import train_final, train_from_export
    from medsweep.search.study._data import describe_dataset, make_data_spec
    from medsweep.search.workers._budget import parse_duration, store_budget_seconds
    from medsweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parse_duration(args.budget)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medsweep-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "quality.db"
    database.unlink(missing_ok=True)
    storage_url = f"sqlite:///{database}"
    storage = open_storage(storage_url)
    started = time.perf_counter()
    # open_i has two TEST images outside TRAIN: no locked split of its own, they are the test.
    spec = make_data_spec(str(data), cv=args.cv, test_fraction=0.0 if open_i else 0.2)
    dataset = ImageDataset.open(spec)
    load_seconds = time.perf_counter() - started
    print(f"load: {describe_dataset(dataset)} in {load_seconds:.1f} s")

    space = SearchSpace.default(search_space(str(args.weights), args.image_size))
    create_study(storage, "quality", dataset, space, metric="auc")
    store_budget_seconds(storage, "quality", budget)
    print(f"search: default space, MobileNet alpha 0.25 at {args.image_size} px, budget {budget:g} s, "
          f"{args.workers} worker(s)")
    started = time.perf_counter()
    import subprocess

    worker = subprocess.run([sys.executable, "-m", "medsweep.search.cli", "worker", "quality", "--workers", str(args.workers),
                             "--quiet"], env=dict(os.environ, MEDSWEEP_STORAGE=storage_url),
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    search_seconds = time.perf_counter() - started
    print(worker.stdout.strip()[-2000:])
    if worker.returncode != 0:
        print(worker.stderr.strip()[-3000:], file=sys.stderr)
    study, settings = load_study(storage, "quality")
    rows = []
    for trial in study.trials:
        cv = trial.user_attrs.get("cv") or {}
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        rows.append([trial.number, trial.state.name.lower(), trial.user_attrs.get("stage", "-"),
                     trial.params.get("fine_tune_fraction", float("nan")), cv.get("mean", float("nan")),
                     len(cv.get("folds", [])), round(seconds, 1)])
    print(table(["trial", "state", "stage", "depth", "CV AUC", "folds", "s"], rows))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures: dict[str, Any] = {"bench": "quality", "data": args.data, "budget_s": budget, "workers": args.workers,
                               "load_s": round(load_seconds, 1), "search_s": round(search_seconds, 1),
                               "trials": len(study.trials), "completed": len(completed),
                               "stages": {s: sum(1 for t in study.trials if t.user_attrs.get("stage") == s)
                                          for s in ("frozen", "partial", "full")},
                               "machine": machine()}
    if completed:
        best = study.best_trial
        ci = (best.user_attrs.get("cv") or {}).get("ci95")
        depth = (best.user_attrs.get("config") or {}).get("fine_tune_fraction")
        print(f"best: trial {best.number}, CV AUC {best.value:.3f} 95% CI {ci}, fine_tune_fraction {depth} "
              f"(stage {best.user_attrs.get('stage')})")
        figures.update(best_trial=best.number, best_cv_auc=round(best.value, 4), best_ci95=ci, depth=depth)
    if completed:
        export = write_export(export_best(study, settings), workdir / "best.yaml")
        started = time.perf_counter()
        if open_i:
            trained = train_from_export(export, str(data), workdir / "model.keras")
            tests = sorted((OPEN_I / "TEST").iterdir())
            predictions = predict_files(trained.path, tests)
            # abd*.png is an abdominal X-ray, chest*.png a chest X-ray.
            expected = {"abd": "openI_abd_xray", "chest": "openI_CXR"}
            right = 0
            for row in predictions:
                stem = Path(row["file"]).name
                want = next(v for k, v in expected.items() if stem.startswith(k))
                right += row["class"] == want
                print(f"  TEST {stem}: {row['class']} ({row['probability']:.3f}), expected {want}")
            figures.update(test_right=right, test_images=len(predictions))
        else:
            final = train_final(export, workdir / "model.keras", remeasure=True)
            test = final.test["metrics"]
            print(f"train --final: locked test AUC {test['auc']:.3f} 95% CI "
                  f"{[round(v, 3) for v in final.test['ci95']['auc']]} on {final.test['images']} images")
            figures.update(test_auc=round(test["auc"], 4), test_auc_ci95=[round(v, 4) for v in final.test["ci95"]["auc"]],
                           test_images=final.test["images"])
        figures["final_s"] = round(time.perf_counter() - started, 1)
    if args.baselines != "none":
        template = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(args.weights), image_size=args.image_size,
                               epochs=args.baseline_epochs)
        runs = [("template", "template recipe (medsweep, frozen)", lambda: cross_validate(template, dataset))]
        if args.baselines == "all":
            plain = {"alpha": 0.25, "weights": str(args.weights), "image_size": args.image_size, "learning_rate": 1e-4,
                     "epochs": args.baseline_epochs, "batch_size": 5, "dense_units": 256, "dropout": 0.5, "seed": 0}
            runs.append(("plain_keras_finetune", "plain Keras full fine-tune (no augmentation)",
                         lambda: cross_validate_plain_keras(plain, list(dataset.folds(args.image_size)), augment=False)))
        for key, label, run in runs:
            try:
                measured = run()
            except Exception as error:  # a broken baseline must not lose the search's figures
                print(f"{label}: failed ({type(error).__name__}: {error})")
                figures[key] = {"error": str(error)}
                continue
            print(f"{label}: CV AUC {measured['mean']:.3f} {[round(v, 3) for v in measured['ci95']]} "
                  f"({measured['seconds']} s)")
            figures[key] = measured
    print(json.dumps(figures, default=str))
    return figures


if __name__ == "__main__":
    main()
