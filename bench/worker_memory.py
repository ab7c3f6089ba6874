"""Resident memory of one worker process over consecutive trials.

    python -m bench.worker_memory [--trials 20] [--backbone MobileNet] [--epochs 2]

Runs `--trials` trials of a fresh study (synthetic 48 px images, SQLite) one after another in
this process with the worker's own loop (`search.run_worker`), and reads the process's resident
set size (VmRSS) after each trial. The first trials load TensorFlow, trace functions and fill
caches, so growth is measured from trial 3 to the last trial. Ends with one line of JSON."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench._common import emit, table

# Beyond this growth per trial (after warm-up), a worker would need a fresh process per trial.
BOUNDED_MB_PER_TRIAL = 5.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares growth per trial."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--backbone", default="MobileNet")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.trials < 4:
        parser.error("--trials must be at least 4 (growth is measured from trial 3)")

    import optuna

    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.search import SearchSpace, create_study, run_worker
    from medsweep.search._demo import build_demo_images
    from medsweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="medsweep-memory."))
    train, _ = build_demo_images(workdir, per_class=40)
    space = {"backbone": args.backbone, "image_size": 32, "weights": "none", "augmentation": False,
             "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "epochs": args.epochs,
             "batch_size": [8, 16]}
    if args.backbone == "MobileNet":
        space["alpha"] = 0.25
    storage = open_storage(f"sqlite:///{workdir / 'memory.db'}")
    dataset = ImageDataset.open(DataSpec(str(train)))
    create_study(storage, "memory", dataset, SearchSpace.default(space), pruner="none")

    start_rss = rss_mb()
    rows: list[tuple[int, str, float, float, float]] = []
    started = time.monotonic()

    def record(trial: optuna.trial.FrozenTrial) -> None:
        rows.append((len(rows) + 1, trial.state.name.lower(), time.monotonic() - started, rss_mb(),
                     rss_mb() - (rows[-1][3] if rows else start_rss)))

    run_worker(storage, "memory", n_trials=args.trials, on_trial=record)
    rss = [row[3] for row in rows]
    growth = rss[-1] - rss[2]
    per_trial = slope(list(range(3, len(rss) + 1)), rss[2:])
    print(f"worker memory: {len(rows)} trials of {args.backbone} (32 px, {args.epochs} epochs) in one process; "
          f"RSS {start_rss:.0f} MB before the first trial")
    print(table(["trial", "state", "elapsed s", "RSS MB", "change MB"], rows))
    bounded = per_trial < BOUNDED_MB_PER_TRIAL
    print(f"growth from trial 3 to trial {len(rss)}: {growth:+.1f} MB ({per_trial:+.2f} MB per trial, "
          f"least squares); {'bounded' if bounded else 'NOT bounded: run each trial in a fresh process'}")
    emit({"bench": "worker_memory", "trials": len(rows), "backbone": args.backbone, "epochs": args.epochs,
          "rss_mb_before": round(start_rss, 1), "rss_mb_trial3": round(rss[2], 1),
          "rss_mb_last": round(rss[-1], 1), "growth_mb_trial3_to_last": round(growth, 1),
          "growth_mb_per_trial": round(per_trial, 2), "bounded": bounded})


if __name__ == "__main__":
    main()
