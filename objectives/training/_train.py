"""One training run: fit a TrialConfig on decoded arrays with the callbacks the caller passes,
measuring the validation set every epoch. The trial's plan (`model.plan_trial`) decides where
the trunk's output comes from (run live, pooled features from the cache, a cut point's outputs
from the cache); one function per source prepares the model and its inputs, and one loop
(`fit_and_measure`) trains them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import TrialConfig
from ..images import TrialData
from ..metrics import class_probabilities, classification_metrics, constant_output_warning, output_spread
from ..model import (BACKBONE, POOLED, TrialPlan, build_model, full_model_like, head_weights, initial_head_weights,
                     plan_trial, set_head_weights, set_trial_state)
from ._balance import balance_training_data
from ._feature_cache import cached_trunk_outputs
from ._options import jit_compile_setting
from ._pipeline import make_dataset
from ._session import (cached_session, compiled_head, compiled_top, live_session, new_session, release_session,
                       seed_everything, use_float32_policy)


@dataclass
class TrialResult:
    """What a run produced: per-epoch history, final validation metrics and the model."""

    config: TrialConfig
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)
    outputs: Any = field(default=None, repr=False)  # validation class probabilities, (n, classes)
    feature_cache: str = "off"  # off | filled | hit: whether the trial trained on cached trunk outputs
    trunk_cut: str | None = None  # where cached trunk outputs came from: "pooled" or a backbone layer's name
    warning: str | None = None  # e.g. constant outputs: a score that measures nothing (see `constant_output_warning`)


@dataclass
class _Prepared:
    """A compiled model at its trial's starting weights and the inputs it trains on."""

    model: Any
    x_train: np.ndarray
    x_val: np.ndarray
    cache_state: str  # off | filled | hit
    trunk_cut: str | None  # POOLED, a backbone layer's name, or None for a live trunk
    to_full_model: Callable[[Any], Any]  # the trained model as one that takes images
    live: bool  # the session holds this trial's model alone: release it afterwards
    head: dict[str, list[np.ndarray]] | None = None  # the head weights to start from (None: as built)


def fit_and_measure(model: Any, config: TrialConfig, plan: TrialPlan, x_train: np.ndarray, y_train: np.ndarray,
                    x_val: np.ndarray, y_val: np.ndarray, class_names: Sequence[str],
                    callbacks: Sequence[Any] = (), *, verbose: int = 0,
                    ) -> tuple[dict[str, list[float]], dict[str, Any], np.ndarray | None]:
    """The one training loop: fit a compiled model (images or trunk outputs in) for
    `config.epochs`, measuring the validation set exactly after every epoch, then once more
    with every metric. Returns (per-epoch history, final metrics, validation outputs).

    `callbacks` are plain Keras callbacks; if one of them is an `EpochHistory`, it is the one
    that records the curves."""
    from ._callbacks import EpochHistory, ExactValidation, check_finite, predict_outputs  # imports Keras

    num_classes = len(class_names)
    recorder = next((c for c in callbacks if isinstance(c, EpochHistory)), None)
    all_callbacks = list(callbacks)
    if recorder is None:
        recorder = EpochHistory()
        all_callbacks.insert(0, recorder)
    x, y, class_weight = balance_training_data(x_train, y_train, num_classes, class_weight=config.class_weight,
                                               oversample=config.oversample, seed=config.seed)
    train = make_dataset(x, y, num_classes, config.batch_size, shuffle=True, seed=config.seed,
                         augment=plan.augment, one_view_per_step=plan.views > 0)
    validation: Any = None
    if len(x_val):
        # Pooled trunk outputs in memory are called directly; images and cut-point outputs
        # (too large for one call) stream through a pipeline.
        in_memory = plan.cached and plan.cut == POOLED
        validation = x_val if in_memory else make_dataset(x_val, y_val, num_classes, config.batch_size,
                                                          shuffle=False, seed=config.seed)
        all_callbacks.insert(0, ExactValidation(validation, y_val, num_classes, config.batch_size))
    model.fit(train, epochs=config.epochs, callbacks=all_callbacks, verbose=verbose, shuffle=False,
              class_weight=class_weight)
    # A diverged run without validation data (a final model) must not be saved as if it trained.
    losses = recorder.history.get("loss", [])
    check_finite(losses, len(losses), model, "training losses")
    if validation is None:
        return recorder.history, {}, None
    outputs = predict_outputs(model, validation, config.batch_size)
    return recorder.history, classification_metrics(y_val, outputs, class_names), outputs


def train_trial(config: TrialConfig, data: TrialData, callbacks: Sequence[Any] = (),
                *, verbose: int = 0, keep_model: bool = False,
                feature_cache_dir: str | Path | None = None, jit_compile: bool | None = None) -> TrialResult:
    """Train `config` on `data.x_train` and measure `data.x_val` after every epoch.

    `callbacks` are plain Keras callbacks (the search layer passes its pruning callback); if one
    of them is an `EpochHistory`, it is the one that records the curves. `model.plan_trial`
    decides how the trial trains: a frozen, unaugmented trial trains its head on cached backbone
    features in `feature_cache_dir` (default $MEDSWEEP_CACHE_DIR or ~/.cache/medsweep/features),
    a partial fine-tune trains the backbone's top on cached outputs of its frozen lower part;
    a two-stage trial first trains its head alone. `jit_compile` forces XLA on or off for live
    trunks (None: Keras decides, which means on with a GPU and off on CPU)."""
    plan = plan_trial(config)
    head = None
    if plan.warmup is not None:
        head = _train_planned(plan.warmup, plan_trial(plan.warmup), data, (), verbose=0, keep_model=False,
                              cache_dir=feature_cache_dir, jit_compile=jit_compile, initial_head=None)[1]
    return _train_planned(config, plan, data, callbacks, verbose=verbose, keep_model=keep_model,
                          cache_dir=feature_cache_dir, jit_compile=jit_compile, initial_head=head)[0]


def _train_planned(config: TrialConfig, plan: TrialPlan, data: TrialData, callbacks: Sequence[Any], *, verbose: int,
                   keep_model: bool, cache_dir: str | Path | None, jit_compile: bool | None,
                   initial_head: dict[str, list[np.ndarray]] | None) -> tuple[TrialResult, dict[str, list[np.ndarray]]]:
    """Prepare the model `plan` calls for, then `fit_and_measure`; returns the result and the
    trained head's weights. The plan changes only where the trunk's output comes from."""
    prepared = None
    if plan.cached and plan.cut == BACKBONE:
        prepared = _above_cached_cut(config, plan, data, cache_dir, jit_compile)
        if prepared is None:  # no cacheable cut, or over the cut-point cache budget
            plan = plan_trial(config, cut_cache=False)
    if prepared is None:
        prepared = (_on_pooled_features(config, plan, data, cache_dir, initial_head) if plan.cached
                    else _live(config, data, jit_compile))
    model = prepared.model
    set_trial_state(model, config, prepared.head if prepared.head is not None else initial_head)
    history, metrics, outputs = fit_and_measure(model, config, plan, prepared.x_train, data.y_train, prepared.x_val,
                                                data.y_val, data.class_names, callbacks, verbose=verbose)
    head = head_weights(model)
    kept = prepared.to_full_model(model) if keep_model else None
    warning = None
    if outputs is not None:
        metrics["output_spread"] = output_spread(outputs)
        warning = constant_output_warning(outputs)
    result = TrialResult(config, history, metrics, kept, feature_cache=prepared.cache_state, warning=warning,
                         outputs=None if outputs is None else class_probabilities(outputs),
                         trunk_cut=prepared.trunk_cut)
    if prepared.live and not keep_model:  # compiled heads and top models stay for later trials
        del model, prepared
        release_session()
    return result, head


def _live(config: TrialConfig, data: TrialData, jit_compile: bool | None) -> _Prepared:
    """The full model (images in), built afresh in a cleared session."""
    live_session(config.seed)
    model = build_model(config, data.num_classes)
    if jit_compile is None:
        jit_compile = jit_compile_setting()
    if jit_compile is not None:
        model.jit_compile = jit_compile
    return _Prepared(model, data.x_train, data.x_val, "off", None, lambda trained: trained, live=True)


def _on_pooled_features(config: TrialConfig, plan: TrialPlan, data: TrialData, cache_dir: str | Path | None,
                        initial_head: dict[str, list[np.ndarray]] | None) -> _Prepared:
    """A kept compiled head on the backbone's pooled features from the cache, starting from the
    head weights `build_model` would (or `initial_head`, a warm-up's trained head)."""
    trunk = cached_trunk_outputs(config, plan, data, cache_dir)
    cached_session()
    feature_size = trunk.train.shape[-1]
    if initial_head is None:
        initial_head = initial_head_weights(config, feature_size, data.num_classes, trunk.backbone_draws)
    seed_everything(config.seed)
    model = compiled_head(config, feature_size, data.num_classes)

    def to_full_model(trained: Any) -> Any:  # the trained head on a full model that takes images
        new_session(config.seed)
        full = build_model(config, data.num_classes)
        set_head_weights(full, head_weights(trained))
        return full

    return _Prepared(model, trunk.train, trunk.val, "filled" if trunk.computed else "hit", POOLED, to_full_model,
                     live=False, head=initial_head)


def _above_cached_cut(config: TrialConfig, plan: TrialPlan, data: TrialData, cache_dir: str | Path | None,
                      jit_compile: bool | None) -> _Prepared | None:
    """A kept compiled top model (the backbone above its cut, and the head) on the cached outputs
    of the frozen lower backbone, at the weights the full model would start from; None when the
    backbone has no cacheable cut or its outputs exceed the cut-point cache budget."""
    use_float32_policy()  # cut outputs must not depend on a worker's precision option
    top = compiled_top(config, data.num_classes, jit_compile_setting() if jit_compile is None else jit_compile)
    if top is None:
        return None
    trunk = cached_trunk_outputs(config, plan, data, cache_dir, base=top.base, cut=top.cut)
    if trunk is None:
        return None
    return _Prepared(top.model, trunk.train, trunk.val, "filled" if trunk.computed else "hit", trunk.cut,
                     lambda trained: full_model_like(config, top.base, trained, data.num_classes), live=False)
