"""Errors raised by the training layer; each message names the bad value and the fix."""

from __future__ import annotations


class ObjectiveError(Exception):
    """Base class of user-facing errors from `objectives` (caught by the CLI)."""


class ConfigError(ObjectiveError):
    """A TrialConfig field or file is wrong."""


class DataError(ObjectiveError):
    """An image folder, manifest or image file cannot be used."""


class BackboneError(ConfigError):
    """An unknown backbone, or weights that cannot be found or loaded."""
