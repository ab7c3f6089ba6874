"""Transferability scores: LogME and the linear probe tell separable features from noise, LogME
is the exact maximum evidence, and ranking candidates reads the same feature cache trials use."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import ConfigError, DataError, TrialConfig, train_trial
from medsweep.objectives.evaluation import CandidateScore, linear_probe_score, logme_score, rank_candidates, ranking_table, shortlist
from medsweep.objectives.images import DataSpec, ImageDataset
from medsweep.objectives.evaluation._transferability import _target_evidence
from tests.conftest import SHARED_DATA, SHARED_WEIGHTS


def _separable(n: int = 120, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian features whose first direction carries the label; and pure noise of the same shape."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    noise = rng.normal(size=(n, d))
    separable = noise.copy()
    separable[:, 0] += 6.0 * (labels - 0.5)
    return separable, rng.normal(size=(n, d)), labels


def test_logme_prefers_features_that_separate_the_labels() -> None:
    separable, noise, labels = _separable()
    assert logme_score(separable, labels) > logme_score(noise, labels) + 0.1


def test_logme_is_invariant_to_feature_order_and_global_scale() -> None:
    separable, _, labels = _separable()
    order = np.random.default_rng(1).permutation(separable.shape[1])
    score = logme_score(separable, labels)
    assert logme_score(separable[:, order], labels) == pytest.approx(score, abs=1e-9)
    assert logme_score(separable * 1000.0, labels) == pytest.approx(score, abs=1e-6)


@pytest.mark.parametrize("n, d", [(60, 20), (30, 80)])
def test_logme_is_the_maximum_log_evidence_per_image(n: int, d: int) -> None:
    """Against the Gaussian marginal likelihood y ~ N(0, F F'/alpha + I/beta) itself, maximised on a
    grid: equal (the grid only approaches the optimum from below), also with fewer images than features."""
    from scipy.stats import multivariate_normal

    features, _, labels = _separable(n, d, seed=2)
    target = labels.astype(np.float64)
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    evidence = _target_evidence(u, singular ** 2, target, d)
    best = max(multivariate_normal(np.zeros(n), features @ features.T / a + np.eye(n) / b).logpdf(target) / n
               for a in np.logspace(-3, 3, 41) for b in np.logspace(-3, 3, 41))
    assert best - 1e-9 <= evidence <= best + 0.01


def test_logme_is_finite_with_fewer_images_than_features_and_with_zero_features() -> None:
    separable, noise, labels = _separable(n=40, d=2048)
    assert math.isfinite(logme_score(separable, labels)) and math.isfinite(logme_score(noise, labels))
    assert logme_score(separable, labels) > logme_score(noise, labels)
    assert math.isfinite(logme_score(np.zeros((40, 16)), labels))


def test_linear_probe_auc_is_near_one_when_separable_and_near_half_on_noise() -> None:
    separable, noise, labels = _separable(n=200)
    groups = np.arange(200) // 2  # pairs of images from one "patient" stay in one fold
    assert linear_probe_score(separable, labels, groups) > 0.97
    assert abs(linear_probe_score(noise, labels, groups) - 0.5) < 0.12


def test_scores_name_bad_input() -> None:
    separable, _, labels = _separable()
    with pytest.raises(DataError, match="two classes"):
        logme_score(separable, np.zeros(len(labels), dtype=int))
    broken = separable.copy()
    broken[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        linear_probe_score(broken, labels)
    with pytest.raises(DataError, match="do not match"):
        logme_score(separable, labels[:-1])


def test_ranking_reads_the_cache_frozen_trials_use(image_folder: Path, tmp_path: Path) -> None:
    dataset = ImageDataset.open(DataSpec(str(image_folder), cv=3))
    cache = tmp_path / "cache"
    candidates = {"vgg": TrialConfig(backbone="VGG19", weights="none", image_size=32),
                  "mobilenet": TrialConfig(backbone="MobileNet", alpha=0.25, weights="none", image_size=32)}
    rows = rank_candidates(candidates, dataset, cache_dir=cache, folds=3)
    assert [row.feature_cache for row in rows] == ["filled", "filled"]
    assert [row.logme for row in rows] == sorted((row.logme for row in rows), reverse=True)
    assert all(row.images == 24 and 0.0 <= row.linear_probe <= 1.0 and not row.error for row in rows)
    assert "vgg" in ranking_table(rows)
    # A cross-validated frozen trial on the same images finds the features the ranking computed.
    trial = candidates["vgg"].replace(augmentation=False, epochs=1, batch_size=8)
    assert train_trial(trial, next(dataset.folds(32)), feature_cache_dir=cache).feature_cache == "hit"
    again = rank_candidates(candidates, dataset, by="linear_probe", cache_dir=cache, folds=3)
    assert {row.feature_cache for row in again} == {"hit"}
    with pytest.raises(ConfigError, match="linear_probe"):
        rank_candidates(candidates, dataset, by="accuracy", cache_dir=cache)


def test_shortlist_keeps_candidates_near_the_best() -> None:
    config = TrialConfig(backbone="VGG19", weights="none", image_size=32)
    rows = [CandidateScore("a", config, feature_rms=0.5, linear_probe=0.80),
            CandidateScore("b", config, feature_rms=0.5, linear_probe=0.95),
            CandidateScore("c", config, feature_rms=0.5, linear_probe=0.92),
            CandidateScore("d", config, error="NaN features"),
            CandidateScore("vanishing", config, feature_rms=1e-17, linear_probe=0.99)]
    assert [row.name for row in shortlist(rows, margin=0.05)] == ["b", "c"]
    assert [row.name for row in shortlist(rows, margin=1.0)] == ["b", "c", "a"]
    assert [row.name for row in shortlist(rows, margin=0.05, min_rms=0.0)] == ["vanishing", "b"]
    assert shortlist(rows, by="logme") == []
    with pytest.raises(ConfigError, match="auc"):
        shortlist(rows, by="auc")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5").is_file()
                    or not (SHARED_DATA / "brain_mri").is_dir(),
                    reason="needs ../shared/data/brain_mri and ../shared/weights (real MobileNet weights)")
def test_real_weights_rank_first_on_brain_mri(tmp_path: Path) -> None:
    dataset = ImageDataset.open(DataSpec(str(SHARED_DATA / "brain_mri"), cv=5))
    candidates = {
        "real": TrialConfig(backbone="MobileNet", alpha=0.25, weights=str(SHARED_WEIGHTS), image_size=224),
        "random": TrialConfig(backbone="MobileNet", alpha=0.25, weights="none", image_size=224),
        "vgg": TrialConfig(backbone="VGG19", weights="none", image_size=64),
    }
    for by in ("logme", "linear_probe"):
        assert rank_candidates(candidates, dataset, by=by, cache_dir=tmp_path)[0].name == "real"
