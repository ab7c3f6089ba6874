"""One training path: `plan_trial` alone decides how a trial trains, and no module reaches into
private Keras."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medsweep.objectives import TrialConfig
from medsweep.objectives.model import plan_trial

FROZEN = TrialConfig(backbone="VGG19", weights="none", image_size=32, augmentation=False)


@pytest.mark.parametrize("changes, trunk, cut, augment, views", [
    ({}, "cached", "pooled", False, 0),
    ({"feature_cache": False}, "live", "pooled", False, 0),
    ({"augmentation": True}, "live", "pooled", True, 0),  # exact on-the-fly augmentation
    ({"augmentation": True, "augmented_views": 3}, "cached", "pooled", False, 3),
    ({"augmentation": True, "augmented_views": 3, "feature_cache": False}, "live", "pooled", True, 0),
    ({"augmented_views": 3}, "cached", "pooled", False, 0),  # views matter only when augmenting
    ({"fine_tune_fraction": 0.3}, "cached", "backbone", False, 0),  # the cut-point cache
    ({"fine_tune_fraction": 0.3, "feature_cache": False}, "live", "backbone", False, 0),
    ({"fine_tune_fraction": 0.3, "augmentation": True}, "live", "backbone", True, 0),
    ({"fine_tune_fraction": 0.3, "augmentation": True, "augmented_views": 3}, "cached", "backbone", False, 3),
])
def test_plan_decides_trunk_cut_and_augmentation(changes: dict, trunk: str, cut: str, augment: bool,
                                                 views: int) -> None:
    plan = plan_trial(FROZEN.replace(**changes))
    assert (plan.trunk, plan.cut, plan.augment, plan.views, plan.warmup) == (trunk, cut, augment, views, None)
    assert plan.cached == (trunk == "cached")


def test_two_stage_plan_warms_up_a_frozen_head_first() -> None:
    config = FROZEN.replace(fine_tune_fraction=0.5, frozen_warmup_epochs=3, epochs=7, learning_rate=3e-4)
    warmup = plan_trial(config).warmup
    assert warmup == config.replace(fine_tune_fraction=0.0, epochs=3, frozen_warmup_epochs=0)
    assert plan_trial(warmup).cached and plan_trial(warmup).warmup is None
    assert plan_trial(FROZEN.replace(frozen_warmup_epochs=3)).warmup is None  # frozen: nothing to warm up


def test_no_module_imports_private_keras() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [str(path.relative_to(root)) for folder in ("objectives", "search", "storage")
                 for path in (root / folder).rglob("*.py") if re.search(r"\bkeras\.src\b", path.read_text())]
    assert not offenders, offenders
