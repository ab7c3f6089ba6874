"""Cut-point cache vs live for partial fine-tuning on the survey's brain_mri images.

For MobileNet alpha 0.25 with the real ImageNet weights, at each image size and
`fine_tune_fraction`, it runs the same sequence of unaugmented fine-tuning trials (learning
rates differ, the backbone's key parts do not) twice: live (`feature_cache: false`, every image
through the whole backbone every epoch) and cut-cached (the first trial computes the frozen
lower backbone's output at the cut, the rest train only the layers above it and the head). It
reports the median seconds per trial after the first, their ratio, the cut layer, the entry's
size, and the largest result difference between the two runs of each trial.

    python -m bench.cutpoint [--sizes 128 224] [--fractions 0.1 0.3] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import data_parser, emit, median, open_split_dataset, parse_data_args, table

LEARNING_RATES = (1e-4, 3e-4, 1e-3, 5e-5, 2e-4, 5e-4)


def run_case(size: int, fraction: float, dataset: Any, args: Any, cache_dir: Path) -> dict[str, Any]:
    from medsweep.objectives import TrialConfig, train_trial
    from medsweep.objectives.images import ArrayCache

    base = TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(args.weights), image_size=size,
                       fine_tune_fraction=fraction, epochs=args.epochs, batch_size=args.batch_size,
                       augmentation=False, dense_units=256, dropout=0.5, seed=0)
    data = dataset.arrays(size)
    name = f"{size}px ftf {fraction:g}"
    live_s: list[float] = []
    cut_s: list[float] = []
    auc_diff, loss_diff, cut, states, entry_mb = 0.0, 0.0, None, [], None
    for index in range(1 + args.repeats):
        config = base.replace(learning_rate=LEARNING_RATES[index % len(LEARNING_RATES)])
        started = time.perf_counter()
        live = train_trial(config.replace(feature_cache=False), data)
        live_s.append(time.perf_counter() - started)
        before = set(ArrayCache(cache_dir).entries())
        started = time.perf_counter()
        cached = train_trial(config, data, feature_cache_dir=cache_dir)
        cut_s.append(time.perf_counter() - started)
        cut, states = cached.trunk_cut, states + [cached.feature_cache]
        new = set(ArrayCache(cache_dir).entries()) - before
        if new:
            entry_mb = round(sum(p.stat().st_size for p in new) / 2**20, 1)
        auc_diff = max(auc_diff, abs(live.metrics["auc"] - cached.metrics["auc"]))
        loss_diff = max(loss_diff, max(abs(a - b) for a, b in zip(live.history["loss"], cached.history["loss"])))
        print(f"  [{name}] trial {index}: live {live_s[-1]:.1f} s (AUC {live.metrics['auc']:.3f}), "
              f"cut-cached {cut_s[-1]:.1f} s ({cached.feature_cache} at {cached.trunk_cut}, "
              f"AUC {cached.metrics['auc']:.3f})", flush=True)
    later_live, later_cut = median(live_s[1:]), median(cut_s[1:])
    return {"case": name, "image_size": size, "fine_tune_fraction": fraction, "cut": cut,
            "entry_mb": entry_mb,
            "live_s": later_live, "cut_s": later_cut, "fill_s": cut_s[0], "first_live_s": live_s[0],
            "ratio": later_live / later_cut, "max_auc_diff": auc_diff, "max_loss_diff": loss_diff,
            "cache": states}


def main() -> None:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="Trials timed after the first one.")
    args = parse_data_args(parser)
    with open("/proc/loadavg") as handle:
        load_start = handle.read().split()[:3]
    print(f"load at start: {' '.join(load_start)}", flush=True)
    dataset = open_split_dataset(args.data)
    results = []
    with tempfile.TemporaryDirectory(prefix="medsweep-bench-cutpoint-") as folder:
        for size in args.sizes:
            for fraction in args.fractions:
                results.append(run_case(size, fraction, dataset, args, Path(folder)))
    with open("/proc/loadavg") as handle:
        load_end = handle.read().split()[:3]
    print()
    print(table(["case", "cut", "entry MB", "live s/trial", "cut-cached s/trial", "fill s", "speedup",
                 "max |dAUC|", "max |dloss|"],
                [[r["case"], r["cut"], r["entry_mb"], r["live_s"], r["cut_s"], r["fill_s"], f"{r['ratio']:.1f}x",
                  r["max_auc_diff"], r["max_loss_diff"]] for r in results]))
    print(f"(median seconds per trial after the first, {args.epochs} epochs, batch {args.batch_size}; fill = the "
          f"first cut-cached trial, which computes the cut outputs; load {' '.join(load_start)} -> "
          f"{' '.join(load_end)})")
    emit({"bench": "cutpoint", "epochs": args.epochs, "batch_size": args.batch_size,
          "load": {"start": load_start, "end": load_end},
          "ratio": min(r["ratio"] for r in results), "cases": results})


if __name__ == "__main__":
    main()
