"""A 40-trial study over 3 backbones (MobileNet alpha 0.25 with the real ImageNet weights,
VGG19 and ResNet50V2 with random weights), frozen, on the survey's brain_mri images, run twice
with the same sampler seed: without the feature cache (every trial pushes every image through
its backbone every epoch) and with it. Reports wall time and the best validation AUC of each.

    python -m bench.study [--trials 40] [--size 64] [--seed 0]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._common import data_parser, emit, median, open_split_dataset, parse_data_args, run_study, study_backbones, table


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--size", type=int, default=64, help="Image size; small so the uncached study takes minutes.")
    parser.add_argument("--min-epochs", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"))
    parser.add_argument("--seed", type=int, default=0)
    args = parse_data_args(parser)
    dataset = open_split_dataset(args.data)
    dataset.arrays(args.size)  # decoding is shared by both runs and not what is compared
    backbones = study_backbones(args.weights, args.size)
    epochs = (args.min_epochs, args.max_epochs)
    runs = []
    with tempfile.TemporaryDirectory(prefix="medsweep-bench-study-") as folder:
        for label, cached in (("cached", True), ("uncached", False)):
            runs.append(run_study(label, dataset, backbones, trials=args.trials, seed=args.seed, pruner=args.pruner,
                                  feature_cache=cached, cache_dir=Path(folder), epochs=epochs))
    cached_run, uncached_run = runs
    print()
    print(table(["run", "wall s", "median s/trial", "epochs", "best AUC", "trials"],
                [[r.label, r.wall_s, median(r.trial_seconds), r.epochs, r.best,
                  ", ".join(f"{n} {s}" for s, n in sorted(r.states.items()))] for r in runs]))
    ratio = uncached_run.wall_s / cached_run.wall_s
    print(f"({args.trials} trials over {', '.join(backbones)} at {args.size} px, {epochs[0]}-{epochs[1]} epochs, "
          f"{args.pruner} pruner, sampler seed {args.seed}; the cached run includes filling the cache; "
          f"wall time ratio {ratio:.1f}x)")
    emit({"bench": "study", "trials": args.trials, "wall_ratio": ratio,
          "runs": [{"label": r.label, "wall_s": r.wall_s, "median_trial_s": median(r.trial_seconds),
                    "epochs": r.epochs, "best_auc": r.best, "states": r.states} for r in runs]})


if __name__ == "__main__":
    main()
