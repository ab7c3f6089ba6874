"""Opening a study storage: an Optuna RDBStorage, or the resilient one that rides out a
database restart, from a URL that `_url` resolved and checked."""

from __future__ import annotations

from typing import Any, Callable

from ._errors import StorageError
from ._url import (STORAGE_ENV, check_storage, describe_storage, engine_options, explain_storage_error,
                   mask_secrets, resolve_storage_url)


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[..., None] | None = None,
    db_down_limit: float | None = None,
    create: bool = True,
) -> Any:
    """Resolve, check and open an Optuna RDBStorage (tables created on first use).

    With `db_down_limit` (seconds), the storage retries calls while the database is
    unreachable, for at most that long in a row (see `ResilientRDBStorage`). With `create`
    False (commands that only read), a storage that holds no studies yet is an error instead:
    a mistyped SQLite path must not leave an empty database file behind."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    resolved = resolve_storage_url(url)
    if not create:
        _refuse_missing_sqlite_file(resolved)
    check_storage(resolved)
    if not create:
        _refuse_empty_storage(resolved)
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


_CREATORS = "`medsweep create`, `paper`, `worker` and `demo`"


def _refuse_missing_sqlite_file(url: str) -> None:
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database).expanduser()
    if not path.exists():  # connecting would create it
        raise StorageError(f"SQLite database file {path} does not exist; check --storage (or ${STORAGE_ENV}): only "
                           f"{_CREATORS} make a new one")


def _refuse_empty_storage(url: str) -> None:
    """A database without Optuna's tables holds no study; reading it would create them."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    engine = sqlalchemy.create_engine(url, **engine_options(url))
    try:
        with engine.connect() as connection:
            present = sqlalchemy.inspect(connection).has_table("studies")
    except SQLAlchemyError as error:
        raise explain_storage_error(url, error) from None
    finally:
        engine.dispose()
    if not present:
        raise StorageError(f"storage {describe_storage(url)} holds no studies (no Optuna tables in it); check "
                           f"--storage (or ${STORAGE_ENV}): only {_CREATORS} create them")
