"""An Optuna RDBStorage that rides out a database restart: every storage call that fails
because the connection dropped is retried with backoff, for at most `down_limit` seconds in a
row; after that the storage gives up with one clear error, and every later call repeats it."""

from __future__ import annotations

import functools
import logging
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage

from ._errors import StorageError
from ._lock import backend_lock
from ._connection import is_connection_error
from ._url import describe_storage, first_line

_logger = logging.getLogger("medsweep.storage")

# The RDBStorage methods Optuna (and its cache layer) call; each is retried as a whole.
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
    "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
    "get_best_trial", "_get_best_trial_id", "_get_stale_trial_ids",
)
FIRST_DELAY = 0.5
MAX_DELAY = 10.0
# How long an outage is still waited out once the worker is told to stop: well inside the 10 s a
# container runtime gives after SIGTERM, so the worker's last line says what became of its trial.
STOPPING_GRACE = 4.0


class _Outage:
    """Backoff bookkeeping for one run of failed attempts."""

    def __init__(self, storage: "ResilientRDBStorage", what: str) -> None:
        self.storage = storage
        self.what = what
        self.started = time.monotonic()
        self.delay = FIRST_DELAY
        self.attempts = 0

    def wait_or_give_up(self, error: BaseException) -> None:
        storage = self.storage
        elapsed = time.monotonic() - self.started
        limit = storage.down_limit
        # The driver's own words ("Connection refused"), not Optuna's commit wrapper.
        detail = first_line(error, storage.url)
        stopping_for = storage.stopping_for()
        if stopping_for is not None and stopping_for >= STOPPING_GRACE:
            storage.gave_up = StorageError(
                f"database {describe_storage(storage.url)} unreachable for {elapsed:.0f} s ({detail}) when the "
                "worker was told to stop; stopped waiting for it"
            )
            raise storage.gave_up from None
        if limit is not None and elapsed >= limit:
            storage.gave_up = StorageError(
                f"database {describe_storage(storage.url)} unreachable for {elapsed:.0f} s, longer than the "
                f"--db-down-limit of {limit:g} s ({detail}); trials stored "
                "before are intact: start the workers again once the database is back"
            )
            raise storage.gave_up from None
        if self.attempts == 0:
            if stopping_for is not None:
                how_long = f"{STOPPING_GRACE - stopping_for:.0f} s (the worker is stopping)"
            else:
                how_long = "ever" if limit is None else f"{limit:g} s"
            _logger.warning("database %s unreachable (%s); retrying for up to %s", describe_storage(storage.url),
                            detail, how_long)
        self.attempts += 1
        pause = self.delay if limit is None else min(self.delay, max(0.05, limit - elapsed))
        if stopping_for is not None:
            pause = min(pause, max(0.05, STOPPING_GRACE - stopping_for))
        if storage.stopping is not None and stopping_for is None:
            storage.stopping.wait(pause)  # a stop request ends the pause at once
        else:
            time.sleep(pause)
        self.delay = min(self.delay * 2, MAX_DELAY)

    def recovered(self) -> None:
        if self.attempts:
            _logger.warning("database %s is back after %.1f s", describe_storage(self.storage.url),
                            time.monotonic() - self.started)


class ResilientRDBStorage(RDBStorage):
    """RDBStorage whose calls survive a database restart shorter than `down_limit` seconds."""

    def __init__(self, url: str, *, down_limit: float | None = 300.0, **kwargs: Any) -> None:
        self.down_limit = down_limit
        self.gave_up: StorageError | None = None
        self.stopping: threading.Event | None = None
        self._stop_seen: float | None = None
        self._local = threading.local()
        self._backend_name = url.split(":", 1)[0].split("+", 1)[0]
        super().__init__(url, **kwargs)

    def give_up_when(self, stopping: threading.Event) -> None:
        """Once `stopping` is set (the worker was told to stop), wait out an outage for at most
        STOPPING_GRACE seconds more instead of `down_limit`, then raise StorageError."""
        self.stopping = stopping

    def stopping_for(self) -> float | None:
        """Seconds since this storage first saw its stop request set, or None before that."""
        if self.stopping is None or not self.stopping.is_set():
            return None
        if self._stop_seen is None:
            self._stop_seen = time.monotonic()
        return time.monotonic() - self._stop_seen

    def retry(self, what: str, call: Callable[[], Any]) -> Any:
        """Run `call`, retrying it with backoff while the database is unreachable."""
        if self.gave_up is not None:
            raise StorageError(str(self.gave_up))
        if getattr(self._local, "retrying", False):
            return call()  # an outer call already retries as a whole
        self._local.retrying = True
        outage: _Outage | None = None
        try:
            while True:
                try:
                    result = call()
                except UpdateFinishedTrialError:
                    # A retried state change whose first attempt did commit before the drop.
                    if outage is not None and what == "set_trial_state_values":
                        outage.recovered()
                        return True
                    raise
                except Exception as error:
                    if not is_connection_error(error, self._backend_name):
                        raise
                    outage = outage or _Outage(self, what)
                    outage.wait_or_give_up(error)
                    continue
                if outage is not None:
                    outage.recovered()
                return result
        finally:
            self._local.retrying = False

    def record_heartbeat(self, trial_id: int) -> None:
        # Best effort: a missed beat is retried by the next one; it must never kill the thread.
        if self.gave_up is not None:
            return
        self._local.retrying = True
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not is_connection_error(error, self._backend_name):
                raise
            _logger.debug("heartbeat of trial id %s missed: database unreachable", trial_id)
        finally:
            self._local.retrying = False

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """`backend_lock(self, name)`, waiting for the database like every other call."""
        outage: _Outage | None = None
        while True:
            if self.gave_up is not None:
                raise StorageError(str(self.gave_up))
            stack = ExitStack()
            try:
                stack.enter_context(backend_lock(self, name))
            except Exception as error:
                stack.close()
                if not is_connection_error(error, self._backend_name):
                    raise
                outage = outage or _Outage(self, "lock")
                outage.wait_or_give_up(error)
                continue
            if outage is not None:
                outage.recovered()
            break
        with stack:
            yield


def _retrying(name: str) -> Callable[..., Any]:
    original = getattr(RDBStorage, name)

    @functools.wraps(original)
    def method(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retry(name, lambda: original(self, *args, **kwargs))

    return method


for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _retrying(_name))
