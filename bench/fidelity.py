"""Which cheap fidelity ranks configurations like the full one: fewer folds, or a smaller image?

    python -m bench.fidelity [--configs 12] [--sizes 224 128] [--depth 0.0] [--data PATH]

Draws `--configs` configurations at random from medsweep's default space (MobileNet alpha 0.25
with the real ImageNet weights, depth fixed at `--depth`), trains each on every fold of the
5-fold grouped CV that `bench.quality` uses (20% locked test left out), at each image size, and
compares the rankings the cheap fidelities give with the full one (5-fold mean at the largest
size): Spearman and Kendall rank correlation, whether the full fidelity's best three are among
the cheap one's best three, and the cost of each fidelity. "fold 1" and "folds 1-2" are what the
study's MedianPruner sees after one or two folds. Ends with one line of JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from ._common import MOBILENET_FILE, data_parser, machine, require_data, table


def draw_configs(count: int, weights: str, depth: float, seed: int = 0) -> list[Any]:
    """`count` configurations from the default space, drawn by Optuna's RandomSampler."""
    import optuna

    from medsweep.search import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.default({"backbone": "MobileNet", "alpha": 0.25, "weights": weights,
                                 "fine_tune_fraction": depth})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(count):
        trial = study.ask()
        configs.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return configs


def fold_scores(config: Any, dataset: Any, size: int) -> tuple[list[float], list[float]]:
    """AUC and seconds on every fold, at `size` px."""
    from medsweep.objectives import train_trial

    config = config.replace(image_size=size)
    scores, seconds = [], []
    for data in dataset.folds(size):
        started = time.perf_counter()
        result = train_trial(config, data, [])
        seconds.append(time.perf_counter() - started)
        scores.append(float(result.metrics["auc"]))
    return scores, seconds


def agreement(full: list[float], cheap: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    def top(values: list[float]) -> set[int]:
        return set(sorted(range(len(values)), key=lambda i: -values[i])[:3])

    return {"spearman": round(float(spearmanr(full, cheap).statistic), 3),
            "kendall": round(float(kendalltau(full, cheap).statistic), 3),
            "top3_kept": len(top(full) & top(cheap))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = data_parser(__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128], help="Largest first: the full fidelity.")
    parser.add_argument("--depth", type=float, default=0.0, help="fine_tune_fraction of every configuration.")
    parser.add_argument("--cv", type=int, default=5)
    args = parser.parse_args(argv)
    require_data(args.data, args.weights)
    import numpy as np

    from medsweep.objectives.images import ImageDataset
    from medsweep.search.study._data import make_data_spec

    dataset = ImageDataset.open(make_data_spec(str(args.data), cv=args.cv, test_fraction=0.2))
    configs = draw_configs(args.configs, str(args.weights), args.depth)
    print(f"{len(configs)} configurations from the default space (depth {args.depth}), {args.cv}-fold grouped CV, "
          f"sizes {args.sizes}; MobileNet alpha 0.25, {args.weights / MOBILENET_FILE}")
    results: dict[int, list[tuple[list[float], list[float]]]] = {size: [] for size in args.sizes}
    rows = []
    for number, config in enumerate(configs):
        row: list[Any] = [number, f"{config.learning_rate:.1e}", config.epochs, config.batch_size]
        for size in args.sizes:
            scores, seconds = fold_scores(config, dataset, size)
            results[size].append((scores, seconds))
            row += [float(np.mean(scores)), round(sum(seconds), 1)]
        rows.append(row)
        print(f"  config {number}: " + ", ".join(f"{s} px {np.mean(r[-1][0]):.3f} ({sum(r[-1][1]):.0f} s)"
                                                  for s, r in results.items()), flush=True)
    print(table(["config", "lr", "epochs", "batch"] + [h for s in args.sizes for h in (f"AUC {s}", f"s {s}")], rows))

    largest = args.sizes[0]
    full = [float(np.mean(scores)) for scores, _ in results[largest]]
    full_seconds = sum(sum(seconds) for _, seconds in results[largest])
    fidelities = []
    for size in args.sizes:
        for label, folds in (("fold 1", 1), ("folds 1-2", 2), (f"{args.cv} folds", args.cv)):
            if size == largest and folds == args.cv:
                continue
            cheap = [float(np.mean(scores[:folds])) for scores, _ in results[size]]
            seconds = sum(sum(s[:folds]) for _, s in results[size])
            fidelities.append({"fidelity": f"{size} px, {label}", **agreement(full, cheap),
                               "cost_share": round(seconds / full_seconds, 3)})
    print(f"\nagainst {largest} px, {args.cv}-fold mean ({full_seconds:.0f} s for all configurations):")
    print(table(["fidelity", "Spearman", "Kendall", "top-3 kept", "cost share"],
                [[f["fidelity"], f["spearman"], f["kendall"], f"{f['top3_kept']}/3", f["cost_share"]]
                 for f in fidelities]))
    figures = {"bench": "fidelity", "configs": len(configs), "depth": args.depth, "sizes": args.sizes,
               "full_seconds": round(full_seconds, 1), "fidelities": fidelities,
               "full_auc": [round(v, 4) for v in full], "machine": machine()}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
