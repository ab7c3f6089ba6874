"""Storage overhead: 8 worker processes run trivial trials (no training, medsweep's full trial
record: config, per-epoch history, intermediate values, metrics) against SQLite and against
PostgreSQL, with medsweep's sampler (TPE, constant liar) and engine options. Reports trials per
second over all workers and the median wall time of one trial inside a worker, which is all
storage and sampling overhead since the objective itself does nothing.

    scripts/with-postgres.sh .venv/bin/python -m bench.storage [--workers 8] [--trials 25]

PostgreSQL is used when MEDSWEEP_BENCH_POSTGRES_URL or MEDSWEEP_TEST_POSTGRES_URL (set by
scripts/with-postgres.sh) names a server; a fresh database is created on it for the run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ._common import emit, median, table

EPOCHS = 5


def _worker(url: str, study_name: str, trials: int, report: str, barrier: Any) -> None:
    import optuna

    from medsweep.search.study._strategy import make_sampler
    from medsweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url), sampler=make_sampler())

    def objective(trial: optuna.Trial) -> float:
        learning_rate = trial.suggest_float("learning_rate", 1e-6, 1e-2, log=True)
        batch_size = trial.suggest_categorical("batch_size", [4, 8, 16, 32])
        epochs = trial.suggest_int("epochs", 5, 60)
        trial.set_user_attr("config", {"backbone": "VGG19", "learning_rate": learning_rate,
                                       "batch_size": batch_size, "epochs": epochs})
        history = {key: [0.5 + 0.01 * e for e in range(EPOCHS)]
                   for key in ("loss", "val_loss", "accuracy", "val_accuracy", "auc", "val_auc")}
        for epoch, value in enumerate(history["val_auc"]):
            trial.report(value, epoch)
        trial.set_user_attr("history", history)
        trial.set_user_attr("metrics", {"auc": history["val_auc"][-1], "accuracy": 0.5, "n": 51})
        return history["val_auc"][-1]

    study.get_trials(deepcopy=False)  # connected
    barrier.wait()  # every worker has imported optuna and connected: start together
    seconds, failures = [], 0
    for _ in range(trials):
        started = time.perf_counter()
        try:
            study.optimize(objective, n_trials=1)
        except Exception:  # noqa: BLE001 - a lock timeout counts as a failed trial here
            failures += 1
        seconds.append(time.perf_counter() - started)
    Path(report).write_text(json.dumps({"seconds": seconds, "failures": failures}))


def run_backend(label: str, url: str, workers: int, trials: int, folder: Path) -> dict[str, Any]:
    import optuna

    from medsweep.storage import open_storage

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    reports = [folder / f"{label}-{i}.json" for i in range(workers)]
    processes = [context.Process(target=_worker, args=(url, name, trials, str(r), barrier)) for r in reports]
    for process in processes:
        process.start()
    barrier.wait()
    start_at = time.time()
    for process in processes:
        process.join()
    finished = time.time()
    results = [json.loads(r.read_text()) for r in reports if r.exists()]
    seconds = [s for r in results for s in r["seconds"]]
    stored = len(optuna.load_study(study_name=name, storage=open_storage(url)).trials)
    wall = finished - start_at
    return {"storage": label, "workers": workers, "trials": stored, "wall_s": wall,
            "trials_per_s": stored / wall, "median_trial_s": median(seconds),
            "p90_trial_s": sorted(seconds)[int(0.9 * (len(seconds) - 1))] if seconds else float("nan"),
            "failures": sum(r["failures"] for r in results)}


def _postgres_database(admin_url: str) -> str:
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = f"medsweep_bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=25, help="Trials per worker.")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory(prefix="medsweep-bench-storage-") as folder:
        results.append(run_backend("sqlite", f"sqlite:///{folder}/bench.db", args.workers, args.trials, Path(folder)))
        admin = os.environ.get("MEDSWEEP_BENCH_POSTGRES_URL") or os.environ.get("MEDSWEEP_TEST_POSTGRES_URL")
        if admin:
            results.append(run_backend("postgresql", _postgres_database(admin), args.workers, args.trials, Path(folder)))
        else:
            print("  no PostgreSQL URL: run through scripts/with-postgres.sh to include it")
    print()
    print(table(["storage", "workers", "trials", "wall s", "trials/s", "median s/trial", "p90 s/trial", "failed"],
                [[r["storage"], r["workers"], r["trials"], r["wall_s"], r["trials_per_s"], r["median_trial_s"],
                  r["p90_trial_s"], r["failures"]] for r in results]))
    print("(trivial trials: each worker's time per trial is sampling + storage overhead only)")
    emit({"bench": "storage", "results": results})


if __name__ == "__main__":
    main()
