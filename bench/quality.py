"""Model quality within a wall budget: medsweep's default budgeted search against the survey
template's recipe and a plain-Keras full fine-tune, with cross-validation or on one split.

    python -m bench.quality [--budget 30m] [--data brain_mri|open_i|PATH] [--split cv|single]
                            [--seed N] [--ensemble K] [--baselines all|template|none] [--out DIR]
    python -m bench.quality --summarize DIR

brain_mri: MobileNet alpha 0.25 with the real ImageNet weights at 224 px, a 20% locked test split
(grouped, so identical images stay together), and the rest searched either with 5-fold grouped CV
(`--split cv`) or split once into training and validation (`--split single`, 25% of the rest, as a
user with official train/validation folders would have). After the search, `train --final`
retrains the best trial once and as an ensemble of K fold models (`--ensemble`, default 5), each
measured once on the locked test split. open_i: the TRAIN folder searched, its TEST images (one
per class) predicted by the final model. Prints the trials per stage, the best trial, when the
best-so-far first came within 0.01 of the final best (time to a good model), the baselines and
the locked tests, then one line of JSON (also written to DIR/quality-<data>-<split>-<seed>.json
with --out). `--summarize DIR` reads those files and prints medians and ranges per split."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


def evaluation_folds(dataset: Any, size: int) -> list[Any]:
    """The search's own validation data: its CV folds, or its one validation split."""
    return list(dataset.folds(size)) if dataset.fold_count else [dataset.arrays(size)]


def cross_validate(config: Any, folds: list[Any]) -> dict[str, Any]:
    """medsweep's own training path on every fold: the mean, its interval and the seconds."""
    from medsweep.objectives import train_trial
    from medsweep.objectives.metrics import cv_summary

    started = time.perf_counter()
    values, shares = [], []
    for data in folds:
        result = train_trial(config, data, [])
        values.append(float(result.metrics["auc"]))
        shares.append(len(data.y_val) / (len(data.y_val) + len(data.y_train)))
    summary = cv_summary(values, sum(shares) / len(shares), (0.0, 1.0))
    return {"mean": summary["mean"], "ci95": summary["ci95"], "folds": values,
            "seconds": round(time.perf_counter() - started, 1)}


def stage_counts(trials: list[Any]) -> dict[str, dict[str, int]]:
    """Trials per stage and state (complete, pruned, failed)."""
    from medsweep.search._record import STAGES, stage_of

    counts = {stage: {"complete": 0, "pruned": 0, "failed": 0} for stage in STAGES}
    for trial in trials:
        stage, state = stage_of(trial), trial.state.name.lower()
        if stage in counts and state in ("complete", "pruned", "fail"):
            counts[stage]["failed" if state == "fail" else state] += 1
    return counts


def time_to_good(trials: list[Any], start: float, direction: str = "maximize", within: float = 0.01
                 ) -> dict[str, Any]:
    """When the best-so-far of the completed trials first came within `within` of the final best,
    in seconds from the search's start, and that final best."""
    done = sorted((t for t in trials if t.state.name == "COMPLETE" and t.value is not None),
                  key=lambda t: t.datetime_complete)
    if not done:
        return {"seconds": None, "final": None}
    sign = 1.0 if direction == "maximize" else -1.0
    final = max(sign * t.value for t in done)
    best = -float("inf")
    for trial in done:
        best = max(best, sign * trial.value)
        if best >= final - within:
            return {"seconds": round(trial.datetime_complete.timestamp() - start, 1), "final": round(sign * final, 4),
                    "trial": trial.number}
    return {"seconds": None, "final": round(sign * final, 4)}


def summarize(folder: Path) -> dict[str, Any]:
    """Medians and ranges, per data set and split, of every run's JSON in `folder`."""
    runs = [json.loads(path.read_text()) for path in sorted(folder.glob("quality-*.json"))]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["data"], run["split"]), []).append(run)
    summary: dict[str, Any] = {"bench": "quality-summary", "groups": []}
    rows = []
    for (data, split), members in sorted(groups.items()):
        def spread(key: str, inner: str | None = None) -> tuple[float | None, float | None, float | None]:
            values = [(m.get(key) or {}).get(inner) if inner else m.get(key) for m in members]
            values = [v for v in values if isinstance(v, (int, float))]
            if not values:
                return None, None, None
            return round(statistics.median(values), 4), round(min(values), 4), round(max(values), 4)

        figures = {"data": data, "split": split, "seeds": [m.get("seed") for m in members],
                   "best_value": spread("best_value"), "best_ci_low": spread("best_ci_low"),
                   "time_to_good_s": spread("time_to_good", "seconds"), "test_auc": spread("test_auc"),
                   "ensemble_test_auc": spread("ensemble_test_auc")}
        summary["groups"].append(figures)
        for m in members:
            rows.append([data, split, m.get("seed"), m.get("best_value"), m.get("best_ci95"), m.get("best_stage"),
                         (m.get("time_to_good") or {}).get("seconds"), m.get("test_auc"), m.get("ensemble_test_auc")])
    print(table(["data", "split", "seed", "best", "95% CI", "stage", "to good (s)", "test AUC", "ensemble test"], rows))
    for figures in summary["groups"]:
        print(f"{figures['data']} {figures['split']}: best median {figures['best_value'][0]} "
              f"[{figures['best_value'][1]}, {figures['best_value'][2]}], time to within 0.01 median "
              f"{figures['time_to_good_s'][0]} s [{figures['time_to_good_s'][1]}, {figures['time_to_good_s'][2]}], "
              f"test AUC median {figures['test_auc'][0]}, ensemble {figures['ensemble_test_auc'][0]}")
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="brain_mri", help="brain_mri, open_i, or a folder of class subfolders")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--budget", default="30m", help="The search's wall budget (30m, 5m, 1800s).")
    parser.add_argument("--workers", type=int, default=1, help="Worker processes sharing the budget.")
    parser.add_argument("--split", choices=("cv", "single"), default="cv",
                        help="cv: 5-fold grouped CV; single: one grouped training/validation split.")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="The TPE sampler's seed (worker --seed).")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="Smaller for a quick check of the bench itself.")
    parser.add_argument("--ensemble", type=int, default=5, help="Fold models in the final ensemble (0: none).")
    parser.add_argument("--baselines", choices=("all", "template", "none"), default="all")
    parser.add_argument("--baseline-epochs", type=int, default=20, help="Epochs of both baselines (the template's 20).")
    parser.add_argument("--workdir", default=None, help="Keep the study, export and models here (default: a temp folder).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON line into this folder.")
    parser.add_argument("--summarize", type=Path, default=None, help="Summarize the JSON files of a folder and stop.")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        return summarize(args.summarize)
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
    from medsweep.search._record import stage_of
    from medsweep.search.results._retrain import train_final, train_from_export
    from medsweep.search.study._data import describe_dataset, make_data_spec
    from medsweep.search.workers._budget import parse_duration, read_wall_budget, store_budget_seconds
    from medsweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parse_duration(args.budget)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medsweep-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "quality.db"
    if database.exists():  # an earlier run's study: never replaced silently
        raise SystemExit(f"error: {database} holds an earlier run's study; remove it or pass another --workdir")
    storage_url = f"sqlite:///{database}"
    storage = open_storage(storage_url)
    started = time.perf_counter()
    # open_i has two TEST images outside TRAIN: no locked split of its own, they are the test.
    cv = args.cv if args.split == "cv" else 0
    spec = make_data_spec(str(data), cv=cv, validation_fraction=0.25, test_fraction=0.0 if open_i else 0.2)
    dataset = ImageDataset.open(spec)
    load_seconds = time.perf_counter() - started
    print(f"load: {describe_dataset(dataset)} in {load_seconds:.1f} s", flush=True)

    space = SearchSpace.default(search_space(str(args.weights), args.image_size))
    create_study(storage, "quality", dataset, space, metric="auc")
    store_budget_seconds(storage, "quality", budget)
    print(f"search: default space, MobileNet alpha 0.25 at {args.image_size} px, {args.split} split, budget "
          f"{budget:g} s, {args.workers} worker(s), sampler seed {args.seed}", flush=True)
    started = time.perf_counter()
    worker = subprocess.run([sys.executable, "-m", "medsweep.search.cli", "worker", "quality", "--workers",
                             str(args.workers), "--seed", str(args.seed), "--quiet"],
                            env=dict(os.environ, MEDSWEEP_STORAGE=storage_url),
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    search_seconds = time.perf_counter() - started
    print(worker.stdout.strip()[-2000:])
    if worker.returncode != 0:
        print(worker.stderr.strip()[-3000:], file=sys.stderr)
    study, settings = load_study(storage, "quality")
    rows = []
    for trial in study.trials:
        cv_record = trial.user_attrs.get("cv") or {}
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        rows.append([trial.number, trial.state.name.lower(), stage_of(trial) or "-",
                     trial.params.get("fine_tune_fraction", float("nan")),
                     trial.value if trial.value is not None else float("nan"), len(cv_record.get("folds", [])),
                     round(seconds, 1), (trial.user_attrs.get("stopped_by") or "")[:60]])
    print(table(["trial", "state", "stage", "depth", "AUC", "folds", "s", "stopped by"], rows))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    stages = stage_counts(study.trials)
    print(table(["stage", "complete", "pruned", "failed"],
                [[stage, c["complete"], c["pruned"], c["failed"]] for stage, c in stages.items()]))
    wall = read_wall_budget(storage, "quality")
    figures: dict[str, Any] = {"bench": "quality", "data": args.data, "split": args.split, "seed": args.seed,
                               "budget_s": budget, "workers": args.workers, "image_size": args.image_size,
                               "load_s": round(load_seconds, 1), "search_s": round(search_seconds, 1),
                               "trials": len(study.trials), "completed": len(completed), "stages": stages}
    if completed:
        best = study.best_trial
        ci = (best.user_attrs.get("cv") or {}).get("ci95")
        best_frozen = max((t.value for t in completed if stage_of(t) == "frozen"), default=None)
        best_fine = max((t.value for t in completed if stage_of(t) in ("partial", "full")), default=None)
        print(f"best: trial {best.number}, AUC {best.value:.3f}" + (f" 95% CI {ci}" if ci else "")
              + f", stage {stage_of(best)}; best frozen {best_frozen}, best fine-tune {best_fine}")
        figures.update(best_trial=best.number, best_value=round(best.value, 4), best_ci95=ci,
                       best_ci_low=ci[0] if ci else None, best_stage=stage_of(best),
                       best_frozen=best_frozen, best_fine_tune=best_fine,
                       fine_tune_beat_frozen=bool(best_fine is not None and best_frozen is not None
                                                  and best_fine > best_frozen),
                       time_to_good=time_to_good(study.trials, wall.start if wall else 0.0))
        print(f"time to a good model: {figures['time_to_good']}", flush=True)
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
                  f"{[round(v, 3) for v in final.test['ci95']['auc']]} on {final.test['images']} images", flush=True)
            figures.update(test_auc=round(test["auc"], 4), test_auc_ci95=[round(v, 4) for v in final.test["ci95"]["auc"]],
                           test_images=final.test["images"])
        figures["final_s"] = round(time.perf_counter() - started, 1)
        if not open_i and args.ensemble >= 2:
            started = time.perf_counter()
            ensemble = train_final(export, workdir / "ensemble.keras", remeasure=True, ensemble=args.ensemble)
            test = ensemble.test["metrics"]
            print(f"train --final --ensemble {args.ensemble}: locked test AUC {test['auc']:.3f} 95% CI "
                  f"{[round(v, 3) for v in ensemble.test['ci95']['auc']]}; members' out-of-fold AUC "
                  f"{ensemble.metrics.get('auc')}", flush=True)
            figures.update(ensemble_test_auc=round(test["auc"], 4),
                           ensemble_test_auc_ci95=[round(v, 4) for v in ensemble.test["ci95"]["auc"]],
                           ensemble_oof_auc=ensemble.metrics.get("auc"),
                           ensemble_s=round(time.perf_counter() - started, 1))
    if args.baselines != "none":
        folds = evaluation_folds(dataset, args.image_size)
        template = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(args.weights), image_size=args.image_size,
                               epochs=args.baseline_epochs)
        runs = [("template", "template recipe (medsweep, frozen)", lambda: cross_validate(template, folds))]
        if args.baselines == "all":
            plain = {"alpha": 0.25, "weights": str(args.weights), "image_size": args.image_size, "learning_rate": 1e-4,
                     "epochs": args.baseline_epochs, "batch_size": 5, "dense_units": 256, "dropout": 0.5, "seed": 0}
            runs.append(("plain_keras_finetune", "plain Keras full fine-tune (no augmentation)",
                         lambda: cross_validate_plain_keras(plain, folds, augment=False)))
        for key, label, run in runs:
            try:
                measured = run()
            except Exception as error:  # a broken baseline must not lose the search's figures
                print(f"{label}: failed ({type(error).__name__}: {error})")
                figures[key] = {"error": str(error)}
                continue
            print(f"{label}: AUC {measured['mean']:.3f} {[None if v is None else round(v, 3) for v in measured['ci95']]} "
                  f"({measured['seconds']} s)")
            figures[key] = measured
    figures["machine"] = machine()
    line = json.dumps(figures, default=str)
    print(line)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"quality-{args.data}-{args.split}-{args.seed}.json").write_text(line + "\n")
    return figures


if __name__ == "__main__":
    main()
