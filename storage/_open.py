"""Opening a study storage: an Optuna RDBStorage, or the resilient one that rides out a
database restart, from a URL that `_url` resolved and checked."""

from __future__ import annotations

from typing import Any, Callable

from ._errors import StorageError
from ._url import explain_storage_error, check_storage, describe_storage, engine_options, mask_secrets, resolve_storage_url


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[..., None] | None = None,
    db_down_limit: float | None = None,
) -> Any:
    """Resolve, check and open an Optuna RDBStorage (tables created on first use).

    With `db_down_limit` (seconds), the storage retries calls while the database is
    unreachable, for at most that long in a row (see `ResilientRDBStorage`)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    resolved = resolve_storage_url(url)
    check_storage(resolved)
    storage_class: Any = optuna.storages.RDBStorage
    extra: dict[str, Any] = {}
    if db_down_limit is not None:
        # Loaded only when asked for: it imports Optuna's storages, which `import storage` avoids.
        from ._resilient import ResilientRDBStorage

        storage_class, extra = ResilientRDBStorage, {"down_limit": db_down_limit}
    try:
        return storage_class(
            resolved,
            **extra,
            engine_kwargs=engine_options(resolved),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
    except SQLAlchemyError as error:
        raise explain_storage_error(resolved, error) from None
    except RuntimeError as error:  # schema version mismatch
        raise StorageError(
            f"storage {describe_storage(resolved)} was written by another Optuna version ({mask_secrets(str(error), resolved).splitlines()[0]}); "
            f"run `optuna storage upgrade --storage $MEDSWEEP_STORAGE`"
        ) from None
