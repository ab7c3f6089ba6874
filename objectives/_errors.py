"""Errors raised by the training layer; each message names the bad value and the fix."""

from __future__ import annotations


class ObjectiveError(Exception):
    """Base class of user-facing errors from `objectives` (caught by the CLI)."""

    # True for errors every trial of a study would hit (keras-tuner's FatalError): a worker
    # stops at once with the message instead of failing trial after trial.
    fatal = False


class ConfigError(ObjectiveError):
    """A TrialConfig field or file is wrong."""

    # `create` checks every configuration a space can produce, so a trial that still meets a
    # ConfigError meets one the next trials would meet too (a setting, a study from before the
    # check): stop the worker rather than fail trial after trial.
    fatal = True


class DataError(ObjectiveError):
    """An image folder, manifest or image file cannot be used."""

    fatal = True  # every trial of a study reads the same data


class BackboneError(ConfigError):
    """An unknown backbone, or weights that cannot be found or loaded."""

    fatal = True  # a missing weights file or unknown backbone fails every trial that uses it


class TrainingDiverged(ObjectiveError):
    """The network's outputs or loss became NaN or infinite: the learning rate is too high for
    this configuration. Not a fault of the data or the code: a searching worker records the
    trial as pruned (a bad configuration the sampler learns from), not as failed."""
