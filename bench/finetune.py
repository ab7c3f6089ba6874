"""The fine-tuning recipe, measured: medsweep's fine-tuning path under several recipes beside a
plain-Keras fine-tune of the same config, on the same grouped cross-validation folds.

    python -m bench.finetune [--size 128] [--epochs 10] [--cv 5] [--recipes bn-frozen,bn-affine,...]

MobileNet alpha 0.25 with the real ImageNet weights (../shared/weights), the template's head
(Dense 256, dropout 0.5), lr 1e-4, batch 5, augmentation. Folds are DataSpec(cv=K), which keeps
identical images in one fold. Recipes run one at a time and each prints its row as it finishes,
so a timeout still leaves figures; the last line is one JSON object."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from bench._baselines import plain_keras_fold
from bench._common import data_parser, emit, parse_data_args, table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BN_RECIPES = ("bn-frozen", "bn-affine", "bn-batch")
# name -> (what it changes, TrialConfig overrides; BN recipes fix batchnorm themselves, the others
# take the best BatchNorm mode measured before them in this run).
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "bn-frozen": ("all layers, BatchNorm frozen (medsweep before)", {"batchnorm": "frozen"}),
    "bn-affine": ("all layers, BatchNorm scale/offset trained, moving statistics", {"batchnorm": "affine"}),
    "bn-batch": ("all layers, BatchNorm on batch statistics", {"batchnorm": "batch"}),
    # Keras 3 runs its BatchNorm on batch statistics under fit despite training=False (noted per fold).
    "plain-keras": ("plain Keras: base(x, training=False), all layers trainable", {"batchnorm": "batch"}),
    "lr-backbone/10": ("backbone lr = head lr / 10", {"backbone_lr_factor": 0.1}),
    "top-30%": ("fine_tune_fraction 0.3", {"fine_tune_fraction": 0.3}),
    "warmup-5": ("5 frozen head epochs first", {"frozen_warmup_epochs": 5}),
    "template": ("frozen backbone (the survey template)", {"fine_tune_fraction": 0.0}),
}
DEFAULT_ORDER = ",".join(RECIPES)


def base_config(weights: Path, size: int, epochs: int) -> dict[str, Any]:
    """The shared config: the template's head and training settings, every layer fine-tuned."""
    return {"backbone": "MobileNet", "alpha": 0.25, "weights": str(weights), "image_size": size,
            "learning_rate": 1e-4, "epochs": epochs, "batch_size": 5, "dense_units": 256, "dropout": 0.5,
            "augmentation": True, "fine_tune_fraction": 1.0, "seed": 0}


def medsweep_fold(values: dict[str, Any], fold: Any) -> tuple[float, dict[str, Any]]:
    """One fold through medsweep's `train_trial`: validation AUC and what the trial reported."""
    from medsweep.objectives import TrialConfig, train_trial

    result = train_trial(TrialConfig(**values), fold)
    return float(result.metrics["auc"]), {"output_spread": result.metrics.get("output_spread")}


def run_recipe(name: str, values: dict[str, Any], folds: list[Any],
               train: Callable[[dict[str, Any], Any], tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """Every fold of one recipe; the mean, 95% interval (objectives.metrics.cv_summary) and seconds."""
    from medsweep.objectives.metrics import cv_summary

    started = time.perf_counter()
    aucs, notes = [], []
    for number, fold in enumerate(folds):
        auc, note = train(values, fold)
        aucs.append(auc)
        notes.append(note)
        print(f"  {name} fold {number}: AUC {auc:.3f} {note} ({time.perf_counter() - started:.0f} s)", flush=True)
    share = sum(len(f.y_val) for f in folds) / sum(len(f.y_val) + len(f.y_train) for f in folds)
    summary = cv_summary(aucs, share, bounds=(0.0, 1.0))
    return {"recipe": name, "mean": round(summary["mean"], 4), "ci95": summary["ci95"],
            "folds": [round(a, 4) for a in aucs], "seconds": round(time.perf_counter() - started, 1),
            "notes": notes, "config": {k: v for k, v in values.items() if k != "weights"}}


def main() -> dict[str, Any]:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (128: CPU-sized)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--recipes", default=DEFAULT_ORDER, help="comma-separated, in order: " + DEFAULT_ORDER.replace("%", "%%"))
    parser.add_argument("--batchnorm", default=None, choices=("frozen", "affine", "batch"),
                        help="BatchNorm mode of the non-BN recipes (default: the best BN recipe of this run, else affine)")
    args = parse_data_args(parser)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe {unknown[0]!r}; choose from {DEFAULT_ORDER}")
    load_start = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "-"
    print(f"load at start: {load_start}; image size {args.size} px, {args.epochs} epochs, {args.cv}-fold grouped CV",
          flush=True)

    from medsweep.objectives.images import DataSpec, ImageDataset

    dataset = ImageDataset.open(DataSpec(str(args.data), cv=args.cv))
    folds = list(dataset.folds(args.size))
    print(f"{len(dataset.labels)} images, {dataset.plan.groups.group_count} content groups, "
          f"validation sizes {[len(f.y_val) for f in folds]}", flush=True)
    base = base_config(args.weights, args.size, args.epochs)
    rows: list[dict[str, Any]] = []
    for name in names:
        values = dict(base)
        measured_bn = [r for r in rows if r["recipe"] in BN_RECIPES]
        if name not in BN_RECIPES:
            if args.batchnorm:
                values["batchnorm"] = args.batchnorm
            else:
                values["batchnorm"] = max(measured_bn, key=lambda r: r["mean"])["config"]["batchnorm"] \
                    if measured_bn else "affine"
        values.update(RECIPES[name][1])
        train = (lambda v, f: plain_keras_fold(v, f, augment=True)) if name == "plain-keras" else medsweep_fold
        row = run_recipe(name, values, folds, train)
        rows.append(row)
        print(f"{name}: CV AUC {row['mean']:.3f} {row['ci95']} in {row['seconds']:.0f} s "
              f"(batchnorm {values.get('batchnorm')})", flush=True)
    load_end = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "-"
    print()
    print(table(["recipe", "what", "batchnorm", "CV AUC", "95% CI", "s"],
                [[r["recipe"], RECIPES[r["recipe"]][0], r["config"].get("batchnorm", "-"), r["mean"],
                  f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]", r["seconds"]] for r in rows]))
    print(f"load at end: {load_end}")
    best = max((r for r in rows if r["recipe"] != "plain-keras"), key=lambda r: r["mean"], default=None)
    result = {"bench": "finetune", "image_size": args.size, "epochs": args.epochs, "cv": args.cv,
              "load_start": load_start, "load_end": load_end, "best": best["recipe"] if best else None,
              "recipes": rows}
    emit(result)
    return result


if __name__ == "__main__":
    main()
