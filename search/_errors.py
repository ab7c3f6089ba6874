"""The search layer's errors, and the tuple of user errors the CLI turns into one line."""

from __future__ import annotations

from medsweep.objectives import ObjectiveError
from medsweep.storage import StorageError


class MedsweepError(Exception):
    """Base class of the search layer's user-facing errors."""


class SpaceError(MedsweepError):
    """A search space file or parameter is wrong."""


class StudyError(MedsweepError):
    """A study is missing, exists already, or its metadata does not fit the request."""


class WorkerError(MedsweepError):
    """A worker stopped for a reason the user must act on (e.g. repeated trial failures)."""


# Everything a user can cause: the CLI prints these as one line and exits non-zero.
USER_ERRORS: tuple[type[Exception], ...] = (MedsweepError, ObjectiveError, StorageError)
