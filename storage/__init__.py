"""Where studies live: storage URL resolution, engine options, health checks, secret masking.

Only this package knows the shape of a storage URL; everything else receives a resolved URL
or an Optuna storage from it."""

from ._errors import StorageError
from ._heartbeat import heartbeat, heartbeat_grace, heartbeat_interval, stale_trial_ids
from ._storage_lock import storage_lock
from ._open import open_storage
from ._url import (
    DEFAULT_STORAGE_URL,
    MAX_OVERFLOW,
    POOL_SIZE,
    STORAGE_ENV,
    check_storage,
    describe_storage,
    engine_options,
    explain_storage_error,
    is_unreachable,
    mask_secrets,
    mask_url,
    resolve_storage_url,
    sqlite_file,
)

__all__ = [
    "DEFAULT_STORAGE_URL",
    "MAX_OVERFLOW",
    "POOL_SIZE",
    "STORAGE_ENV",
    "StorageError",
    "check_storage",
    "describe_storage",
    "engine_options",
    "explain_storage_error",
    "is_unreachable",
    "heartbeat",
    "heartbeat_grace",
    "heartbeat_interval",
    "mask_secrets",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "sqlite_file",
    "stale_trial_ids",
    "storage_lock",
]
