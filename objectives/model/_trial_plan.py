"""How one trial trains, decided in one place (`plan_trial`): where the trainable part begins
(the POOLED cut: only the head; a BACKBONE cut: the top of the backbone too), whether the trunk
runs live or is read from the feature cache, how images are augmented, and an optional head-only
warm-up that runs first."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrialConfig

LIVE = "live"  # the model runs the trunk on every batch of images
CACHED = "cached"  # the trunk's output is read from the feature cache
POOLED = "pooled"  # cut after global average pooling: only the head trains
BACKBONE = "backbone"  # cut inside the backbone: its top `fine_tune_fraction` of layers trains too


@dataclass(frozen=True)
class TrialPlan:
    """How one trial trains: where the trainable part begins (`cut`), where the trunk's output
    comes from (`trunk`), how training images are augmented, and an optional head-only
    warm-up trial that runs first and hands its head weights on.

    trunk CACHED with cut BACKBONE is the cut-point cache: the frozen lower backbone's output is
    read from the cache and the model is the backbone's top above the cut plus the head
    (`backbone_cut`, `build_top_model`). The cut layer itself is found when the backbone is
    built; where none fits (or its outputs exceed the size budget), the trial falls back to
    `plan_trial(config, cut_cache=False)`."""

    trunk: str
    cut: str
    augment: bool  # on-the-fly augmentation of the images in the training pipeline
    views: int  # pre-computed augmented views per image in the cache (0: none)
    warmup: TrialConfig | None = None

    @property
    def cached(self) -> bool:
        return self.trunk == CACHED


def plan_trial(config: TrialConfig, *, cut_cache: bool = True) -> TrialPlan:
    """The one place that reads `fine_tune_fraction`, `feature_cache`, `augmentation`,
    `augmented_views` and `frozen_warmup_epochs` to decide how a trial trains. `cut_cache=False`
    is the fallback when a fine-tuning trial's backbone offers no cacheable cut."""
    cut = POOLED if config.fine_tune_fraction <= 0 else BACKBONE
    # Only a frozen trunk gives the same output every epoch; augmentation on the fly changes it
    # every step, a bounded set of pre-computed views does not. Fine-tuning freezes the lower
    # backbone, so its output at the cut is cached like pooled features.
    cached = (config.feature_cache and (cut == POOLED or cut_cache)
              and (not config.augmentation or config.augmented_views > 0))
    warmup = None
    if cut != POOLED and config.frozen_warmup_epochs > 0:
        warmup = config.replace(fine_tune_fraction=0.0, epochs=config.frozen_warmup_epochs, frozen_warmup_epochs=0)
    return TrialPlan(trunk=CACHED if cached else LIVE, cut=cut, augment=config.augmentation and not cached,
                     views=config.augmented_views if cached and config.augmentation else 0, warmup=warmup)
