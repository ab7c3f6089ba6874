"""Errors from the storage layer; messages never hold a password."""

from __future__ import annotations


class StorageError(Exception):
    """A storage URL that cannot be used: bad scheme, unreachable server, wrong credentials."""
