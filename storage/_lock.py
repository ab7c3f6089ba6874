"""A lock shared by every worker process of a storage, on any machine: a PostgreSQL advisory
lock on the server, an exclusive file lock beside an SQLite file. Workers hold it around
"count the study's trials, then create one", which keeps a study's total budget exact."""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ._errors import StorageError

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock` derived from the lock's name."""
    digest = hashlib.blake2b(f"medsweep:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _thread_lock(name: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(name, threading.Lock())


@contextmanager
def _advisory_lock(engine: Any, key: int) -> Iterator[None]:
    import sqlalchemy

    # One of the storage's own pooled connections, so a worker still holds at most two.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            try:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except sqlalchemy.exc.DBAPIError:
                # The connection died (server restart): the server dropped the lock with it.
                connection.invalidate()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def backend_lock(storage: Any, name: str) -> Iterator[None]:
    """Hold the lock called `name` on an Optuna RDBStorage for the duration of the block (one
    attempt; `storage_lock` is the public entry that also waits out a database restart).

    Every process on every machine that opens the same storage waits here for the others."""
    from sqlalchemy.engine import make_url

    url = make_url(storage.url)
    with _thread_lock(f"{storage.url}|{name}"):
        backend = url.get_backend_name()
        if backend == "postgresql":
            with _advisory_lock(storage.engine, lock_key(name)):
                yield
        elif backend == "sqlite":
            if url.database in (None, "", ":memory:"):
                yield  # one process only: the thread lock is enough
            else:
                with _file_lock(Path(url.database).expanduser().with_name(Path(url.database).name + ".lock")):
                    yield
        else:
            raise StorageError(f"workers need a PostgreSQL or SQLite storage to share a study's budget, not {backend}")
