"""Pruning: the same seeded 30-trial study (MobileNet alpha 0.25 with the real ImageNet
weights, frozen, on the survey's brain_mri images; learning rate, head width, dropout and batch
size searched; 30 epochs per trial) run with MedianPruner, Hyperband and no pruner. Reports
total epochs trained, wall time and the best validation AUC of each.

Every trial trains its head on cached backbone features (computed once before the studies), so
90 trials fit in minutes on two CPU cores; the epochs saved are the same with or without the
cache, since pruning decisions depend only on the reported values.

    python -m bench.pruning [--trials 30] [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ._common import data_parser, emit, open_split_dataset, parse_data_args, run_study, study_backbones, table


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_data_args(parser)

    from medsweep.objectives import TrialConfig, train_trial

    dataset = open_split_dataset(args.data)
    backbone = {"MobileNet": study_backbones(args.weights, args.size)["MobileNet"]}
    runs = []
    with tempfile.TemporaryDirectory(prefix="medsweep-bench-pruning-") as folder:
        cache = Path(folder)
        started = time.perf_counter()
        warm = TrialConfig(**backbone["MobileNet"], augmentation=False, epochs=1, seed=0)
        train_trial(warm, dataset.arrays(args.size), feature_cache_dir=cache)
        print(f"  features computed once in {time.perf_counter() - started:.1f} s", flush=True)
        for pruner in ("none", "median", "hyperband"):
            runs.append(run_study(pruner, dataset, backbone, trials=args.trials, seed=args.seed, pruner=pruner,
                                  feature_cache=True, cache_dir=cache, epochs=args.epochs))
    baseline = runs[0]
    rows, figures = [], []
    for run in runs:
        saving = 1 - run.epochs / baseline.epochs
        gap = baseline.best - run.best
        rows.append([run.label, run.epochs, f"{saving:.0%}", run.wall_s, run.best, gap,
                     ", ".join(f"{n} {s}" for s, n in sorted(run.states.items()))])
        figures.append({"pruner": run.label, "epochs": run.epochs, "epoch_saving": saving, "wall_s": run.wall_s,
                        "best_auc": run.best, "best_gap": gap, "states": run.states})
    print()
    print(table(["pruner", "epochs", "saved", "wall s", "best AUC", "gap to none", "trials"], rows))
    print(f"({args.trials} trials each, {args.epochs} epochs per unpruned trial, sampler seed {args.seed}; "
          "target: >= 40% fewer epochs with a best AUC within 0.02 of no pruning)")
    met = [f["pruner"] for f in figures[1:] if f["epoch_saving"] >= 0.40 and f["best_gap"] <= 0.02]
    emit({"bench": "pruning", "target_saving": 0.40, "target_gap": 0.02, "met_by": met, "runs": figures})


if __name__ == "__main__":
    main()
