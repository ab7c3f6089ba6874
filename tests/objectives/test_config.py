from __future__ import annotations

import pytest
import yaml

from medsweep.objectives import ConfigError, TrialConfig


def test_round_trips_through_yaml_unchanged() -> None:
    config = TrialConfig(backbone="MobileNet", alpha=0.25, image_size=64, weights="/w", learning_rate=3e-4,
                         epochs=7, batch_size=16, augmentation=False, fine_tune_fraction=0.3,
                         intensity="percentile")
    again = TrialConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="'learnig_rate'"):
        TrialConfig.from_dict({"learnig_rate": 0.1})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"backbone": "ResNet9000"}, "unknown backbone 'ResNet9000'"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"image_size": 8}, "image_size must be between"),
        ({"dropout": 1.0}, "dropout"),
        ({"augmentation": "yes"}, "augmentation must be true or false"),
        ({"alpha": 0.5}, "alpha 0.5 only applies to MobileNet"),
        ({"intensity": "MINMAX"}, "intensity must be one of raw, minmax, percentile"),
    ],
)
def test_bad_values_name_the_field(changes: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        TrialConfig.from_dict(changes)


def test_image_size_defaults_to_backbone_size() -> None:
    assert TrialConfig(backbone="InceptionV3").resolved_image_size == 299
    assert TrialConfig(backbone="VGG19", image_size=64).resolved_image_size == 64


def test_configs_stored_before_intensity_existed_load_as_raw() -> None:
    stored = TrialConfig().to_dict()
    del stored["intensity"]
    assert TrialConfig.from_dict(stored).intensity == "raw"
