"""The one entry for a storage-wide lock: the backend's lock (`_lock`), waited out across a
database restart when the storage is the resilient one (`_resilient`)."""

from __future__ import annotations

from typing import Any

from ._lock import backend_lock


def storage_lock(storage: Any, name: str) -> Any:
    """A context manager holding the storage-wide lock called `name`: every worker process on
    every machine that opens the same storage waits here for the others. On a storage from
    `open_storage` it also waits out a database restart."""
    from ._resilient import ResilientRDBStorage  # imports Optuna: only when a lock is taken

    if isinstance(storage, ResilientRDBStorage):
        return storage.lock(name)
    return backend_lock(storage, name)
