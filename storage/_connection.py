"""Telling "the database is unreachable right now" from "the request is wrong", for the retries
of the resilient storage and for the one-line errors of commands that lose the database."""

from __future__ import annotations

from typing import Iterator


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_connection_error(error: BaseException, backend: str) -> bool:
    """True when `error` means "the database is unreachable right now", not "the request is wrong"."""
    import sqlalchemy.exc as sa_exc

    for cause in _causes(error):
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, sa_exc.TimeoutError):  # no pooled connection came free
            return True
        if isinstance(cause, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            if backend == "sqlite":
                text = str(cause).lower()
                return "locked" in text or "busy" in text
            return True
    return False
