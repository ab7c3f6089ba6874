"""Storage URLs: the one place that knows their shape. Resolves defaults, masks passwords,
opens Optuna storages with the engine options workers need, and turns connection failures
into one-line errors that name the host and database."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ._errors import StorageError

DEFAULT_STORAGE_URL = "sqlite:///medsweep.db"
STORAGE_ENV = "MEDSWEEP_STORAGE"
_SUPPORTED = ("sqlite", "postgresql", "mysql")
# Each worker process keeps one pooled connection and may open one more for a burst
# (heartbeat thread + trial writes), so N workers need at most 2N server connections.
POOL_SIZE = 1
MAX_OVERFLOW = 1


# libpq reads a password from the query string too (`?password=...`).
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd|sslpassword)=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password (in the user part or the query string) replaced by ***."""
    masked = _QUERY_SECRET.sub(r"\1***", url)
    scheme, separator, rest = masked.partition("://")
    if not separator or scheme.startswith("sqlite"):
        return masked
    # Up to the LAST '@': a password with an unencoded '@' must not leak its tail as the host.
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return masked
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


def _url_secrets(url: str) -> list[str]:
    """The URL's passwords as written and as SQLAlchemy parses them (query string included)."""
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url

    found: list[str] = []
    scheme, _, rest = url.partition("://")
    credentials = rest.rpartition("@")[0]
    if ":" in credentials and not scheme.startswith("sqlite"):
        raw = credentials.split(":", 1)[1]
        found += [raw, unquote(raw)]
    found += [unquote(m.group(0).split("=", 1)[1]) for m in _QUERY_SECRET.finditer(url)]
    try:
        parsed = make_url(url)
        found += [str(parsed.password or "")] + [str(v) for k, v in parsed.query.items()
                                                 if k.lower() in ("password", "passwd", "pwd", "sslpassword")]
    except Exception:
        pass
    return sorted({s for s in found if s and s != "***"}, key=len, reverse=True)


def mask_secrets(text: str, url: str) -> str:
    """`text` with the URL's password (raw and URL-decoded, user part or query) replaced by ***."""
    text = text.replace(url, mask_url(url))
    for secret in _url_secrets(url):
        text = text.replace(secret, "***")
    return text


def root_cause(error: BaseException) -> BaseException:
    """The database driver's error behind `error` (Optuna wraps a dropped connection in a
    StorageInternalError that blames "invalid data in the commit"), else `error` itself."""
    from sqlalchemy.exc import DBAPIError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.orig is not None:
            return current.orig
        current = current.__cause__ or current.__context__
    return error


def first_line(error: BaseException, url: str) -> str:
    """The root cause's first line, password masked (the type name when it has no text)."""
    lines = mask_secrets(str(root_cause(error)), url).strip().splitlines()
    return lines[0].strip() if lines else type(root_cause(error)).__name__


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
    except ValueError:  # SQLAlchemy's int() of the port
        raise StorageError(
            f"storage URL {mask_url(url)!r} has a port that is not a number; write HOST:PORT, e.g. 127.0.0.1:5432"
        ) from None
    if parsed.get_backend_name() not in _SUPPORTED:
        raise StorageError(
            f"storage URL scheme {parsed.drivername!r} is not supported; use sqlite:/// or postgresql+psycopg2://"
        )
    if parsed.host and "@" in parsed.host:
        raise StorageError(
            f"storage URL {mask_url(url)!r} has an unencoded '@' in its user name or password; write it as "
            "%40 (python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=\"\"))' PASSWORD)"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(
                f"SQLite storage {mask_url(url)}: folder {folder} does not exist; create it or change the path"
            )
    return url


def sqlite_file(url: str | None = None) -> Path | None:
    """The resolved path of the SQLite file a storage URL names (the argument, else
    $MEDSWEEP_STORAGE, else the default); None for a server or an in-memory database. Commands
    compare their output paths with it so they never write over a study database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(resolve_storage_url(url))
    except (StorageError, ArgumentError, ValueError):
        return None  # not a usable URL: the command that opens it says so
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def describe_storage(url: str) -> str:
    """A short, password-free description: 'PostgreSQL 127.0.0.1:5432/db' or 'SQLite file.db'."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database or ':memory:'}"
    port = parsed.port or (3306 if parsed.get_backend_name() == "mysql" else 5432)
    return f"{parsed.get_backend_name()} {parsed.host or 'localhost'}:{port}/{parsed.database}"


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


def explain_storage_error(url: str, error: BaseException, *, failed: str = "cannot open storage") -> StorageError:
    """One password-free line for a database failure: the driver's real cause and a hint."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    raw = mask_secrets(str(root_cause(error)), url).strip().splitlines()
    detail = raw[0] if raw else type(error).__name__
    where = describe_storage(url)
    lowered = " ".join(raw).lower()
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        hint = f"wrong user name or password for user {parsed.username!r}; fix the password in --storage or ${STORAGE_ENV}"
    elif "does not exist" in lowered and "database" in lowered:
        hint = (f"database {parsed.database!r} does not exist; create it "
                f"(createdb -h {parsed.host} -p {parsed.port or 5432} -U {parsed.username} {parsed.database})")
    elif any(s in lowered for s in ("connection refused", "could not connect", "timeout", "timed out",
                                     "could not translate host name", "no route", "name or service",
                                     "closed the connection", "terminating connection", "connection already closed")):
        hint = f"is the server running and reachable at {parsed.host}:{parsed.port or 5432}?"
    elif "unable to open database file" in lowered:
        hint = "check that the SQLite file's folder exists and is writable"
    else:
        hint = f"check the URL in --storage or ${STORAGE_ENV}"
    return StorageError(f"{failed} {where} ({mask_url(url)}): {detail}; {hint}")


def is_unreachable(url: str, error: BaseException) -> bool:
    """True when `error` (possibly wrapped by Optuna) means the database went away, not a bad request."""
    from sqlalchemy.engine import make_url

    from ._connection import is_connection_error

    return is_connection_error(error, make_url(url).get_backend_name())


_DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "pymysql": "pymysql", "psycopg2": "psycopg2-binary"}


def _create_engine(url: str) -> Any:
    """`sqlalchemy.create_engine`, with a missing or unknown driver as one StorageError."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import NoSuchModuleError

    try:
        return sqlalchemy.create_engine(url, **engine_options(url))
    except NoSuchModuleError:
        raise StorageError(
            f"storage URL {mask_url(url)!r} names driver {make_url(url).drivername!r}, which SQLAlchemy does "
            "not know; use sqlite:/// or postgresql+psycopg2://"
        ) from None
    except ImportError as error:
        module = (error.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "its driver")
        raise StorageError(
            f"storage {describe_storage(url)} needs the Python module {module or '?'}, which is not installed; "
            f"pip install {package}, or use postgresql+psycopg2:// or sqlite:///"
        ) from None


def check_storage(url: str) -> None:
    """Connect once and run `SELECT 1`; raise StorageError with a hint when that fails."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    engine = _create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as error:
        raise explain_storage_error(url, error) from None
    finally:
        engine.dispose()
