"""Storage URLs: the one place that knows their shape. Resolves defaults, masks passwords,
opens Optuna storages with the engine options workers need, and turns connection failures
into one-line errors that name the host and database."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from ._errors import StorageError

DEFAULT_STORAGE_URL = "sqlite:///medsweep.db"
STORAGE_ENV = "MEDSWEEP_STORAGE"
_SUPPORTED = ("sqlite", "postgresql", "mysql")
# Each worker process keeps one pooled connection and may open one more for a burst
# (heartbeat thread + trial writes), so N workers need at most 2N server connections.
POOL_SIZE = 1
MAX_OVERFLOW = 1


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)([^@]*)(@)", r"\1***\3", url)


def mask_secrets(text: str, url: str) -> str:
    """`text` with the URL's password (raw and URL-decoded) replaced by ***."""
    from sqlalchemy.engine import make_url

    text = text.replace(url, mask_url(url))
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL to use: the argument, else $MEDSWEEP_STORAGE, else sqlite:///medsweep.db.

    `postgres://` and `postgresql://` get the psycopg2 driver named explicitly."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = (url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE_URL).strip()
    if url.startswith("postgres://"):
        url = "postgresql+psycopg2://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not a database URL; use sqlite:///medsweep.db or "
            "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None
    if parsed.get_backend_name() not in _SUPPORTED:
        raise StorageError(
            f"storage URL scheme {parsed.drivername!r} is not supported; use sqlite:/// or postgresql+psycopg2://"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(
                f"SQLite storage {mask_url(url)}: folder {folder} does not exist; create it or change the path"
            )
    return url


def describe_storage(url: str) -> str:
    """A short, password-free description: 'PostgreSQL 127.0.0.1:5432/db' or 'SQLite file.db'."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database or ':memory:'}"
    return f"{parsed.get_backend_name()} {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}"


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: a tiny pool with pre-ping for servers, a lock timeout for SQLite."""
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 60}}
    return {
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        # The process id in pg_stat_activity shows which worker holds which connections; TCP
        # keepalives notice a database host that vanished (no reset) in about 25 s, not hours.
        "connect_args": {"connect_timeout": 10, "application_name": f"medsweep pid {os.getpid()}",
                         "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3},
    }


def _explain_connection_error(url: str, error: Exception) -> StorageError:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    raw = mask_secrets(str(getattr(error, "orig", None) or error), url).strip().splitlines()
    detail = raw[0] if raw else type(error).__name__
    where = describe_storage(url)
    lowered = " ".join(raw).lower()
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        hint = f"wrong user name or password for user {parsed.username!r}; fix the password in --storage or ${STORAGE_ENV}"
    elif "does not exist" in lowered and "database" in lowered:
        hint = (f"database {parsed.database!r} does not exist; create it "
                f"(createdb -h {parsed.host} -p {parsed.port or 5432} -U {parsed.username} {parsed.database})")
    elif any(s in lowered for s in ("connection refused", "could not connect", "timeout", "timed out",
                                     "could not translate host name", "no route", "name or service")):
        hint = f"is the server running and reachable at {parsed.host}:{parsed.port or 5432}?"
    elif "unable to open database file" in lowered:
        hint = "check that the SQLite file's folder exists and is writable"
    else:
        hint = f"check the URL in --storage or ${STORAGE_ENV}"
    return StorageError(f"cannot open storage {where} ({mask_url(url)}): {detail}; {hint}")


def check_storage(url: str) -> None:
    """Connect once and run `SELECT 1`; raise StorageError with a hint when that fails."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    engine = sqlalchemy.create_engine(url, **engine_options(url))
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as error:
        raise _explain_connection_error(url, error) from None
    finally:
        engine.dispose()
