"""Cached vs uncached frozen trials on the survey's brain_mri images.

For each backbone it runs the same sequence of frozen, unaugmented trials (learning rates
differ, the backbone's key parts do not) twice: with `feature_cache: false` (the full model,
every image through the backbone every epoch) and with the cache (the first trial fills it,
the rest train only the head). It reports the median seconds per trial after the first, their
ratio, and the largest result difference between the two runs of each trial.

    python -m bench.cache [--repeats 2] [--data ../shared/data/brain_mri] [--weights ../shared/weights]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import data_parser, emit, median, open_split_dataset, parse_data_args, table

LEARNING_RATES = (1e-3, 3e-4, 3e-3, 1e-4, 2e-3, 5e-4)


def cases(weights: Path, args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"MobileNet a0.25 ImageNet {args.size}px, {args.epochs} ep",
         {"backbone": "MobileNet", "alpha": 0.25, "weights": str(weights), "image_size": args.size,
          "epochs": args.epochs, "batch_size": 5}),
        (f"{args.large} weights none {args.large_size}px, {args.large_epochs} ep",
         {"backbone": args.large, "weights": "none", "image_size": args.large_size,
          "epochs": args.large_epochs, "batch_size": 16}),
    ]


def run_case(name: str, values: dict[str, Any], dataset: Any, repeats: int, cache_dir: Path) -> dict[str, Any]:
    from medsweep.objectives import TrialConfig, train_trial

    base = TrialConfig(**values, augmentation=False, dense_units=256, dropout=0.5, seed=0)
    data = dataset.arrays(base.resolved_image_size)
    uncached: list[float] = []
    cached: list[float] = []
    auc_diff, loss_diff = 0.0, 0.0
    statuses = []
    for index in range(1 + repeats):
        config = base.replace(learning_rate=LEARNING_RATES[index % len(LEARNING_RATES)])
        started = time.perf_counter()
        full = train_trial(config.replace(feature_cache=False), data)
        uncached.append(time.perf_counter() - started)
        started = time.perf_counter()
        head = train_trial(config, data, feature_cache_dir=cache_dir)
        cached.append(time.perf_counter() - started)
        statuses.append(head.feature_cache)
        auc_diff = max(auc_diff, abs(full.metrics["auc"] - head.metrics["auc"]))
        loss_diff = max(loss_diff, abs(full.metrics["loss"] - head.metrics["loss"]))
        print(f"  [{name}] trial {index}: uncached {uncached[-1]:.1f} s (AUC {full.metrics['auc']:.3f}), "
              f"cached {cached[-1]:.2f} s ({head.feature_cache}, AUC {head.metrics['auc']:.3f})", flush=True)
    later_uncached, later_cached = median(uncached[1:]), median(cached[1:])
    return {"case": name, "backbone": base.backbone, "uncached_s": later_uncached, "cached_s": later_cached,
            "fill_s": cached[0], "first_uncached_s": uncached[0], "ratio": later_uncached / later_cached,
            "max_auc_diff": auc_diff, "max_loss_diff": loss_diff, "cache": statuses}


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="Trials timed after the first one.")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=20, help="The template's 20 epochs.")
    parser.add_argument("--large", default="ResNet152V2", help="The large backbone (weights none).")
    parser.add_argument("--large-size", type=int, default=64)
    parser.add_argument("--large-epochs", type=int, default=2)
    parser.add_argument("--large-repeats", type=int, default=2)
    args = parse_data_args(parser)
    dataset = open_split_dataset(args.data)
    results = []
    with tempfile.TemporaryDirectory(prefix="medsweep-bench-cache-") as folder:
        for index, (name, values) in enumerate(cases(args.weights, args)):
            repeats = args.repeats if index == 0 else args.large_repeats
            results.append(run_case(name, values, dataset, repeats, Path(folder)))
    print()
    print(table(["case", "uncached s/trial", "cached s/trial", "fill s", "speedup", "max |dAUC|", "max |dloss|"],
                [[r["case"], r["uncached_s"], r["cached_s"], r["fill_s"], f"{r['ratio']:.1f}x",
                  r["max_auc_diff"], r["max_loss_diff"]] for r in results]))
    print("(median seconds per trial after the first; fill = the first cached trial, which computes the features)")
    emit({"bench": "cache", "ratio": min(r["ratio"] for r in results), "target_ratio": 20.0,
          "cases": results})


if __name__ == "__main__":
    main()
