"""Which transferability score ranks backbones better here: LogME or a cross-validated linear probe,
against the ground truth of training each candidate's frozen head over 5 grouped folds.

    python -m bench.transferability [--data ../shared/data/brain_mri] [--open-i ../shared/data/open_i_abd_vs_cxr]

Candidates: MobileNet alpha 0.25 with the real ImageNet weights (224 px) and, with `weights: none`,
the same MobileNet (224), MobileNetV2 (96), ResNet50V2, VGG19 and EfficientNetV2B0 (64). Features
go to a fresh cache folder, so "features s" is the first-time cost. Prints a table per dataset and
the rank correlations, then one line of JSON."""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import BRAIN_MRI, SHARED, WEIGHTS, emit, require_data, table

OPEN_I = SHARED / "data" / "open_i_abd_vs_cxr"

# The ground truth's one fixed recipe: a frozen head trained on cached features, no augmentation.
GROUND_TRUTH = {"augmentation": False, "fine_tune_fraction": 0.0, "learning_rate": 1e-3, "epochs": 20,
                "batch_size": 16, "dense_units": 256, "dropout": 0.5, "seed": 0}
# The proposal of docs/transferability.md: keep candidates this close to the best score.
SHORTLIST_MARGINS = {"logme": 0.1, "linear_probe": 0.05}


def candidates(weights: Path) -> dict[str, dict[str, Any]]:
    """The candidates the issue names; only MobileNet alpha 0.25 has real weights on this machine."""
    return {
        "MobileNet a0.25 real 224": {"backbone": "MobileNet", "alpha": 0.25, "weights": str(weights),
                                     "image_size": 224},
        "MobileNet a0.25 none 224": {"backbone": "MobileNet", "alpha": 0.25, "weights": "none", "image_size": 224},
        "MobileNetV2 none 96": {"backbone": "MobileNetV2", "weights": "none", "image_size": 96},
        "ResNet50V2 none 64": {"backbone": "ResNet50V2", "weights": "none", "image_size": 64},
        "VGG19 none 64": {"backbone": "VGG19", "weights": "none", "image_size": 64},
        "EfficientNetV2B0 none 64": {"backbone": "EfficientNetV2B0", "weights": "none", "image_size": 64},
    }


def pooled_open_i(folder: Path, workdir: Path) -> Path:
    """TRAIN and VAL pooled into one folder of class subfolders (symbolic links, no copies), so
    the folds cover all 75 labelled images."""
    pooled = workdir / "open_i"
    for part in ("TRAIN", "VAL"):
        for class_dir in sorted(p for p in (folder / part).iterdir() if p.is_dir()):
            (pooled / class_dir.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(p for p in class_dir.iterdir() if p.is_file()):
                (pooled / class_dir.name / f"{part}_{image.name}").symlink_to(image.resolve())
    return pooled


def ground_truth(config: Any, dataset: Any, cache_dir: Path) -> tuple[list[float], float]:
    """Each fold's validation AUC of the frozen head trained with the fixed recipe, and the seconds."""
    from medsweep.objectives import train_trial

    started = time.perf_counter()
    trial = config.replace(**GROUND_TRUTH)
    aucs = [float(train_trial(trial, fold, feature_cache_dir=cache_dir).metrics["auc"])
            for fold in dataset.folds(config.resolved_image_size)]
    return aucs, time.perf_counter() - started


def correlations(scores: list[float], truth: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    pairs = [(s, t) for s, t in zip(scores, truth) if not (math.isnan(s) or math.isnan(t))]
    if len(pairs) < 3:
        return {"spearman": float("nan"), "kendall": float("nan")}
    first, second = zip(*pairs)
    return {"spearman": round(float(spearmanr(first, second).statistic), 3),
            "kendall": round(float(kendalltau(first, second).statistic), 3)}


def run_dataset(label: str, spec: Any, weights: Path, cache_dir: Path, folds: int) -> dict[str, Any]:
    """Score and train every candidate on one dataset; print its table and return its figures."""
    import numpy as np

    from medsweep.objectives import ObjectiveError, TrialConfig
    from medsweep.objectives.images import ImageDataset
    from medsweep.objectives.evaluation import CandidateScore, score_candidate, shortlist

    dataset = ImageDataset.open(spec)
    print(f"\n{label}: {len(dataset.labels)} images, {dataset.plan.groups.describe()}, {dataset.fold_count} folds",
          flush=True)
    rows: list[dict[str, Any]] = []
    scored: list[Any] = []
    for name, values in candidates(weights).items():
        config = TrialConfig(**values)
        try:
            score = score_candidate(config, dataset, cache_dir=cache_dir, folds=folds, name=name)
            aucs, train_seconds = ground_truth(config, dataset, cache_dir)
        except (ObjectiveError, ValueError, RuntimeError) as error:  # e.g. a backbone that cannot build here
            score = CandidateScore(name, config, error=str(error).splitlines()[0][:200])
            aucs, train_seconds = [], 0.0
        scored.append(score)
        row = score.as_dict()
        row.update(trained_auc=float(np.mean(aucs)) if aucs else float("nan"),
                   trained_auc_std=float(np.std(aucs)) if aucs else float("nan"),
                   train_seconds=round(train_seconds, 1), fold_aucs=[round(a, 4) for a in aucs])
        rows.append(row)
        print(f"  {name}: LogME {row['logme']:.3f}, probe {row['linear_probe']:.3f}, trained "
              f"{row['trained_auc']:.3f} ({row['feature_seconds']:.1f} s features, {train_seconds:.1f} s training)"
              + (f" [{row['error']}]" if row["error"] else ""), flush=True)
    truth = [r["trained_auc"] for r in rows]
    print(table(["candidate", "images", "dims", "RMS", "LogME", "probe AUC", "trained AUC", "± sd", "features s",
                 "LogME s", "probe s", "train s"],
                [[r["name"], r["images"], r["feature_size"], f"{r['feature_rms']:.1e}", r["logme"], r["linear_probe"],
                  r["trained_auc"],
                  r["trained_auc_std"], r["feature_seconds"], r["logme_seconds"], r["probe_seconds"],
                  r["train_seconds"]] for r in rows]))
    real = next(iter(candidates(weights)))
    summary: dict[str, Any] = {"dataset": label, "images": len(dataset.labels), "folds": dataset.fold_count}
    for score in ("logme", "linear_probe", "trained_auc"):
        values = [r[score] for r in rows]
        top = max(v for v in values if not math.isnan(v))
        tied = [r["name"] for v, r in zip(values, rows) if v >= top - 5e-4]  # equal at the printed precision
        summary[f"{score}_first"] = tied
        summary[f"{score}_real_first"] = real in tied
        if score != "trained_auc":
            summary[f"{score}_vs_trained"] = correlations(values, truth)
            # Without the easy call (real weights vs random ones): can the score order the rest?
            summary[f"{score}_vs_trained_none_only"] = correlations(values[1:], truth[1:])
    shortlists = {by: [row.name for row in shortlist(scored, by=by, margin=margin)]
                  for by, margin in SHORTLIST_MARGINS.items()}
    summary["shortlist"] = shortlists
    print(f"  shortlist (features RMS >= 1e-6, within {SHORTLIST_MARGINS} of the best): {shortlists}")
    print(f"  rank correlation with the trained AUC: LogME {summary['logme_vs_trained']}, "
          f"linear probe {summary['linear_probe_vs_trained']}; weights-none candidates only: LogME "
          f"{summary['logme_vs_trained_none_only']}, linear probe {summary['linear_probe_vs_trained_none_only']}"
          f"; first by LogME: {summary['logme_first']}, "
          f"by probe: {summary['linear_probe_first']}, by training: {summary['trained_auc_first']}")
    summary["candidates"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=BRAIN_MRI)
    parser.add_argument("--open-i", default=str(OPEN_I), help="open_i_abd_vs_cxr folder ('' to skip it)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: a fresh temp folder)")
    args = parser.parse_args(argv)
    require_data(args.data, args.weights)

    from medsweep.objectives.images import DataSpec

    workdir = Path(tempfile.mkdtemp(prefix="medsweep-transfer-"))
    cache_dir = args.cache_dir or workdir / "features"
    started = time.perf_counter()
    with open("/proc/loadavg") as handle:
        load_before = handle.read().split()[:3]
    datasets = [run_dataset("brain_mri", DataSpec(str(args.data), cv=args.folds), args.weights, cache_dir,
                            args.folds)]
    if args.open_i and Path(args.open_i).is_dir():
        spec = DataSpec(str(pooled_open_i(Path(args.open_i), workdir)), cv=args.folds)
        datasets.append(run_dataset("open_i TRAIN+VAL", spec, args.weights, cache_dir, args.folds))
    with open("/proc/loadavg") as handle:
        load_after = handle.read().split()[:3]
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s; load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    figures = {"bench": "transferability", "ground_truth": GROUND_TRUTH, "datasets": datasets,
               "seconds": round(total, 1), "loadavg_before": load_before, "loadavg_after": load_after}
    emit(figures)
    return figures


if __name__ == "__main__":
    main()
