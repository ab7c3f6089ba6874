from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from medsweep.search import DEFAULT_SPACE, SearchSpace, SpaceError


def test_default_space_is_the_issues() -> None:
    space = SearchSpace.default()
    assert space.parameters["backbone"].choices == ("InceptionV3", "DenseNet201", "ResNet152V2", "Xception", "VGG19")
    lr = space.parameters["learning_rate"]
    assert (lr.low, lr.high, lr.log) == (1e-6, 1e-2, True)
    assert (space.parameters["epochs"].low, space.parameters["epochs"].high) == (5, 40)
    assert space.parameters["batch_size"].choices == (4, 8, 16, 32)
    # Issue 10: the default search fine-tunes, after a warm-up, with augmentation the cache serves.
    assert space.parameters["fine_tune_fraction"].choices == (0.0, 0.3, 1.0)
    assert space.parameters["frozen_warmup_epochs"].low >= 1
    assert space.parameters["backbone_lr_factor"].choices == (0.1, 1.0)
    assert space.parameters["augmented_views"].value > 0


def test_yaml_overrides_with_list_range_and_fixed(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("backbone: [MobileNet]\nalpha: 0.25\nimage_size: [32, 64]\nweights: none\n"
                    "augmentation: [true, false]\ndropout: {low: 0.1, high: 0.5}\n")
    space = SearchSpace.from_yaml(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    configs = []
    for _ in range(6):
        trial = study.ask()
        configs.append(space.suggest(trial))
        study.tell(trial, 0.5)
    assert {c.backbone for c in configs} == {"MobileNet"} and {c.alpha for c in configs} == {0.25}
    assert {c.image_size for c in configs} <= {32, 64} and all(0.1 <= c.dropout <= 0.5 for c in configs)
    assert all(1 <= c.epochs for c in configs) and set(DEFAULT_SPACE) <= set(space.parameters)
    assert "weights" not in study.trials[0].params  # fixed values are not searched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learnig_rate: [0.1]\n", "unknown search space parameter 'learnig_rate'"),
        ("learning_rate: {low: 0.1, high: 0.01}\n", "learning_rate: low .* must be below high"),
        ("learning_rate: {low: 0, high: 0.01, log: true}\n", "learning_rate"),
        ("epochs: []\n", "epochs: the list of choices is empty"),
        ("backbone: [VGG19, Resnet]\n", "unknown backbone 'Resnet'"),
        ("backbone: {low: 1, high: 2}\n", "backbone is not numeric"),
        ("epochs: {low: 1}\n", "a range needs low and high"),
        ("epochs: [1, 2\n", "not valid YAML at line"),
        ("- a\n- b\n", "must map parameter names"),
    ],
)
def test_bad_space_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        SearchSpace.from_yaml(path)
    assert "\n" not in str(info.value)


def test_a_frozen_trial_does_not_sample_what_only_a_fine_tune_uses() -> None:
    space = SearchSpace.default({"backbone": "MobileNet", "alpha": 0.25})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"fine_tune_fraction": 0.0})
    study.enqueue_trial({"fine_tune_fraction": 1.0})
    frozen, tuned = study.ask(), study.ask()
    frozen_config, tuned_config = space.suggest(frozen), space.suggest(tuned)
    # TPE would otherwise learn, from noise, which warm-up and backbone rate go with good frozen scores
    assert "frozen_warmup_epochs" not in frozen.params and "backbone_lr_factor" not in frozen.params
    assert (frozen_config.frozen_warmup_epochs, frozen_config.backbone_lr_factor) == (0, 1.0)
    assert {"frozen_warmup_epochs", "backbone_lr_factor"} <= set(tuned.params)
    assert 1 <= tuned_config.frozen_warmup_epochs <= 10 and tuned_config.backbone_lr_factor in (0.1, 1.0)
    # fixed in a space file, they are used as given whatever the depth
    fixed = SearchSpace.default({"fine_tune_fraction": 0.0, "frozen_warmup_epochs": 3})
    assert fixed.suggest(study.ask()).frozen_warmup_epochs == 3
