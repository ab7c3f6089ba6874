"""Transferability: how well a frozen backbone's pooled features suit a dataset, measured in
seconds from the feature cache, so the search can rank backbones before training any of them.

Two scores:

- LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
  ICML 2021): the log marginal likelihood (evidence) of a Bayesian linear regression from the
  features to each one-hot class target, maximised over the prior precision alpha and the noise
  precision beta by the paper's fixed-point iteration on the SVD of the features, divided by the
  number of images and averaged over the classes. Higher is better; no training, no folds.
- A linear probe: the mean ROC AUC of a logistic regression on standardised features over
  stratified, grouped folds (scikit-learn). Higher is better; on the AUC scale the search uses.

`rank_candidates` computes both for each candidate (backbone, weights, image size) on a dataset
and returns them best first."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..config import TrialConfig
from ..images import TrialData
from .._errors import ConfigError, DataError

if TYPE_CHECKING:
    from ..images import ImageDataset

SCORES = ("logme", "linear_probe")
_LOGME_MAX_ITERATIONS = 100
_LOGME_TOLERANCE = 1e-3  # relative change of alpha/beta at which the fixed point counts as reached
_EPSILON = 1e-5  # keeps alpha and beta finite when a target is fitted exactly (as the paper's code)


def _check_inputs(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise DataError(f"features {features.shape} and labels {labels.shape} do not match; pass an (images, "
                        "features) matrix and one integer label per image")
    if len(np.unique(labels)) < 2:
        raise DataError(f"labels hold {len(np.unique(labels))} class(es); transferability needs images of at "
                        "least two classes")
    if not np.all(np.isfinite(features)):
        raise DataError("features hold NaN or infinite values; this backbone's output cannot be scored "
                        "(try another image size or weights)")
    return features, labels


def _target_evidence(u: np.ndarray, sigma: np.ndarray, target: np.ndarray, dimensions: int) -> float:
    """Maximum log evidence per image of `target` ~ features @ w + noise, w ~ N(0, I/alpha),
    noise ~ N(0, 1/beta), given the features' left singular vectors `u` and squared singular
    values `sigma`."""
    n = len(target)
    rank = len(sigma)
    total = float(target @ target)
    projected = (u.T @ target) ** 2  # the target's energy along each singular direction
    outside = max(total - float(projected.sum()), 0.0)  # energy no feature direction can explain
    if rank == 0:  # constant-zero features explain nothing: only the noise precision is fitted
        beta = n / (total + _EPSILON)
        return float((n * math.log(beta) - beta * (total + _EPSILON) - n * math.log(2 * math.pi)) / (2 * n))
    alpha, beta = 1.0, 1.0
    for _ in range(_LOGME_MAX_ITERATIONS):
        ratio = alpha / beta
        gamma = float((sigma / (sigma + ratio)).sum())  # effective number of well-determined weights
        weight_norm = float((sigma * projected / (sigma + ratio) ** 2).sum())  # |m|^2 of the posterior mean
        residual = float((projected * (ratio / (sigma + ratio)) ** 2).sum()) + outside  # |y - F m|^2
        alpha = gamma / (weight_norm + _EPSILON)
        beta = (n - gamma) / (residual + _EPSILON)
        if abs(alpha / beta - ratio) / ratio <= _LOGME_TOLERANCE:
            break
    ratio = alpha / beta
    weight_norm = float((sigma * projected / (sigma + ratio) ** 2).sum())
    residual = float((projected * (ratio / (sigma + ratio)) ** 2).sum()) + outside
    # log|alpha I + beta F'F| over all `dimensions` eigenvalues: the D - rank directions the features
    # do not span contribute alpha each (the paper's fixed-point code omits them when n < D:
    # thuml/LogME issue 23).
    log_det = float(np.log(alpha + beta * sigma).sum()) + (dimensions - rank) * math.log(alpha)
    evidence = (dimensions * math.log(alpha) + n * math.log(beta) - log_det - beta * residual
                - alpha * weight_norm - n * math.log(2 * math.pi)) / 2
    return evidence / n


def logme_score(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., ICML 2021): mean over classes of the maximum log evidence per image of
    a linear model from the features to the class's one-hot target. Higher transfers better."""
    features, labels = _check_inputs(features, labels)
    n, dimensions = features.shape
    # The maximum evidence does not depend on the features' overall scale (alpha absorbs it), but
    # the epsilon guards do: one unit RMS makes backbones with tiny or huge activations comparable.
    scale = float(np.sqrt(np.mean(features ** 2)))
    if scale > 0:
        features = features / scale
    with _one_blas_thread():
        u, sigma = _left_singular(features)
        return float(np.mean([_target_evidence(u, sigma, (labels == label).astype(np.float64), dimensions)
                              for label in np.unique(labels)]))


def _one_blas_thread() -> Any:
    """One BLAS thread: beside training workers, a threaded SVD or solver waits on busy cores
    (measured 10x slower on 2 loaded cores); single-threaded these sizes take well under a second."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _left_singular(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left singular vectors and squared singular values of the features' non-null directions."""
    n, dimensions = features.shape
    if n <= dimensions:
        u, singular, _ = np.linalg.svd(features, full_matrices=False)
        keep = singular > singular.max(initial=0.0) * max(n, dimensions) * np.finfo(np.float64).eps
        return u[:, keep], singular[keep] ** 2
    # More images than features: the (features x features) Gram matrix is the cheap route (a 3000 x
    # 2048 SVD takes 20 s on one busy core). Squaring loses the smallest directions, which count as
    # null; a direction with sigma far below alpha/beta adds the same evidence either way.
    sigma, v = np.linalg.eigh(features.T @ features)
    keep = sigma > sigma.max(initial=0.0) * 1e-10
    sigma, v = sigma[keep], v[:, keep]
    return features @ v / np.sqrt(sigma), sigma


def _probe_splitter(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> Any:
    """Stratified (grouped, where groups are given) folds; fewer folds when a class has fewer
    independent groups than `folds`."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    ids = np.arange(len(labels)) if groups is None else np.asarray(groups)
    available = min(len(np.unique(ids[labels == label])) for label in np.unique(labels))
    if available < 2:
        raise DataError(f"a class has only {available} independent image group(s); the linear probe needs at "
                        "least 2 per class (add images)")
    folds = min(folds, available)
    if groups is None:
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)


def linear_probe_score(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
                       folds: int = 5, seed: int = 0, regularization: float = 1.0) -> float:
    """Mean ROC AUC over stratified grouped folds of a logistic regression on standardised
    features (macro one-vs-rest for more than two classes). Higher transfers better."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _check_inputs(features, labels)
    if groups is not None and len(groups) != len(labels):
        raise DataError(f"{len(groups)} group ids for {len(labels)} images; pass one group id per image")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=2000))
    scoring = "roc_auc" if len(np.unique(labels)) == 2 else "roc_auc_ovr"
    with _one_blas_thread():
        scores = cross_val_score(probe, features, labels, groups=groups, scoring=scoring,
                                 cv=_probe_splitter(labels, groups, folds, seed), error_score="raise")
    return float(np.mean(scores))


def candidate_name(config: TrialConfig) -> str:
    """A short label: backbone (and MobileNet width), weights, input size."""
    from ..config import get_backbone

    backbone = get_backbone(config.backbone)
    width = f" a{config.alpha:g}" if backbone.has_alpha else ""
    weights = config.weights if config.weights in ("imagenet", "none") else f"file:{Path(config.weights).name}"
    return f"{config.backbone}{width} {weights} {config.resolved_image_size}px"


@dataclass
class CandidateScore:
    """One candidate's transferability scores, and what they cost."""

    name: str
    config: TrialConfig
    images: int = 0  # distinct images scored (identical files count once)
    feature_size: int = 0
    # LogME and the probe do not see the features' overall scale, a head trained on them does:
    # random-init MobileNets give RMS ~1e-17 here, on which the frozen head stays at chance.
    feature_rms: float = float("nan")
    logme: float = float("nan")
    linear_probe: float = float("nan")
    feature_seconds: float = 0.0  # computing (or reading) the cached features
    logme_seconds: float = 0.0
    probe_seconds: float = 0.0
    feature_cache: str = ""  # filled | hit
    error: str = ""  # why the candidate could not be scored (it then ranks last)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON, status and reports."""
        return {"name": self.name, "backbone": self.config.backbone, "weights": self.config.weights,
                "image_size": self.config.resolved_image_size, "images": self.images,
                "feature_size": self.feature_size, "feature_rms": self.feature_rms, "logme": self.logme,
                "linear_probe": self.linear_probe,
                "feature_seconds": self.feature_seconds, "logme_seconds": self.logme_seconds,
                "probe_seconds": self.probe_seconds, "feature_cache": self.feature_cache, "error": self.error}


def pooled_features(config: TrialConfig, data: TrialData, cache_dir: str | Path | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(features per distinct image, each image's row in them, computed): the feature cache's
    pooled features of all of `data`'s images, the entry a frozen trial on the same images uses.
    The one place that reads the cache."""
    from ..training import cached_features

    entry, computed, train_rows, val_rows = cached_features(config, data, cache_dir)
    return np.asarray(entry["features"]), np.concatenate([train_rows, val_rows]), computed


def _distinct_images(dataset: "ImageDataset", config: TrialConfig, cache_dir: str | Path | None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Features, labels and group ids of the dataset's search images, one row per distinct image
    (byte-identical copies would otherwise count twice)."""
    size = config.resolved_image_size
    images, labels = dataset.all_arrays(size)
    groups = dataset.plan.groups.ids[dataset.plan.development]
    # Every search image as "training" data: the same image set, so the same cache entry, as the
    # cross-validation folds and the validation split of frozen trials.
    data = TrialData(dataset.class_names, images, labels, images[:0], labels[:0])
    features, rows, computed = pooled_features(config, data, cache_dir)
    distinct, first = np.unique(rows, return_index=True)
    return features[distinct], labels[first], groups[first], computed


def score_candidate(config: TrialConfig, dataset: "ImageDataset", *, cache_dir: str | Path | None = None,
                    folds: int = 5, seed: int = 0, name: str | None = None) -> CandidateScore:
    """Both scores for one candidate on the dataset's search images (never its locked test set)."""
    # Transferability is a property of the frozen trunk's plain features: no augmentation, no
    # fine-tuning, whatever the candidate's training knobs say.
    config = config.replace(augmentation=False, fine_tune_fraction=0.0, feature_cache=True)
    row = CandidateScore(name or candidate_name(config), config)
    started = time.perf_counter()
    features, labels, groups, computed = _distinct_images(dataset, config, cache_dir)
    row.feature_seconds = time.perf_counter() - started
    row.images, row.feature_size = features.shape
    row.feature_rms = float(np.sqrt(np.mean(np.square(features, dtype=np.float64))))
    row.feature_cache = "filled" if computed else "hit"
    try:
        started = time.perf_counter()
        row.logme = logme_score(features, labels)
        row.logme_seconds = time.perf_counter() - started
        started = time.perf_counter()
        row.linear_probe = linear_probe_score(features, labels, groups, folds=folds, seed=seed)
        row.probe_seconds = time.perf_counter() - started
    except DataError as error:
        row.error = str(error)
    return row


def _sort_key(row: CandidateScore, by: str) -> tuple[bool, float]:
    value = getattr(row, by)
    return (math.isnan(value), -value if not math.isnan(value) else 0.0)


def _check_score(by: str) -> None:
    if by not in SCORES:
        raise ConfigError(f"unknown transferability score {by!r}; choose one of: {', '.join(SCORES)}")


def rank_candidates(candidates: Sequence[TrialConfig] | Mapping[str, TrialConfig], dataset: "ImageDataset", *,
                    by: str = "logme", cache_dir: str | Path | None = None, folds: int = 5,
                    seed: int = 0) -> list[CandidateScore]:
    """Score every candidate (backbone, weights, image size) on the dataset and return them best
    first by `by` (logme or linear_probe); candidates that could not be scored come last."""
    _check_score(by)
    named = candidates.items() if isinstance(candidates, Mapping) else [(None, c) for c in candidates]
    rows = [score_candidate(config, dataset, cache_dir=cache_dir, folds=folds, seed=seed, name=name)
            for name, config in named]
    return sorted(rows, key=lambda row: _sort_key(row, by))


VANISHING_RMS = 1e-6  # measured: heads on features of RMS 1e-11 and below stay at chance, 1e-3 and up learn


def shortlist(rows: Sequence[CandidateScore], by: str = "linear_probe", margin: float = 0.05,
              min_rms: float = VANISHING_RMS) -> list[CandidateScore]:
    """The candidates worth search budget: those within `margin` of the best `by` score (AUC
    points for the linear probe, log evidence per image for LogME) whose features do not vanish
    (RMS at least `min_rms`), best first."""
    _check_score(by)
    scored = [row for row in rows if not math.isnan(getattr(row, by)) and row.feature_rms >= min_rms]
    if not scored:
        return []
    best = max(getattr(row, by) for row in scored)
    return sorted((row for row in scored if getattr(row, by) >= best - margin), key=lambda row: _sort_key(row, by))


def ranking_table(rows: Sequence[CandidateScore]) -> str:
    """The ranking as a plain fixed-width table (rank, candidate, feature RMS, both scores, seconds)."""
    headers = ("rank", "candidate", "feature RMS", "LogME", "probe AUC", "features s", "scores s")
    cells = [(str(rank), row.name, f"{row.feature_rms:.1e}", "-" if math.isnan(row.logme) else f"{row.logme:.3f}",
              "-" if math.isnan(row.linear_probe) else f"{row.linear_probe:.3f}", f"{row.feature_seconds:.1f}",
              f"{row.logme_seconds + row.probe_seconds:.2f}") for rank, row in enumerate(rows, 1)]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) if i == 1 else v.rjust(w)  # noqa: E731
                                    for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(c) for c in cells)])
