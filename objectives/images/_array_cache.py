"""An on-disk cache of arrays (frozen-backbone features), addressed by a key of everything they
depend on, shared by every worker process on a machine.

Each entry is one `.npz` file named by the SHA-256 of its key; the key is stored inside the file
too and checked on load, so a changed key part (backbone, weights file content, image size,
alpha, image content, preprocessing, library versions) simply addresses a different file. The
entry also holds the SHA-256 of its arrays, checked on load: an entry damaged or rewritten after
it was stored (or written before entries carried the checksum) is logged and computed again,
never trained on.
Writers compute under an advisory file lock (so two workers do not compute the same entry at
once), write to a temporary file in the same folder and publish it with an atomic rename, so a
reader never sees a half-written entry even where locking is unavailable (network file systems)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .._errors import ConfigError

CACHE_ENV = "MEDSWEEP_CACHE_DIR"
# A cut-point cache entry (lower-backbone outputs, far larger than pooled features) above this
# many MiB is refused and the trial trains live: it would be held in memory whole while training.
CUT_BUDGET_ENV = "MEDSWEEP_CUT_CACHE_MB"
DEFAULT_CUT_BUDGET_MB = 2048
_KEY_ENTRY = "__medsweep_key__"
_CHECKSUM_ENTRY = "__medsweep_sha256__"
_logger = logging.getLogger("medsweep.cache")
# Entries this process verified, by (path, inode, size, mtime): a trial loading the same unchanged
# file again skips hashing it (a cut-point entry can be gigabytes).
_verified: set[tuple[str, int, int, int]] = set()
_warned: set[tuple[str, int, int, int]] = set()  # logged once, though `get_or_compute` looks twice

try:  # POSIX only; elsewhere the atomic rename alone keeps entries whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def default_cache_dir() -> Path:
    """$MEDSWEEP_CACHE_DIR, or ~/.cache/medsweep/features."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base).expanduser() / "medsweep" / "features"


def cut_cache_budget() -> int:
    """The largest cut-point cache entry in bytes: $MEDSWEEP_CUT_CACHE_MB MiB (0 turns the
    cut-point cache off), default DEFAULT_CUT_BUDGET_MB."""
    configured = os.environ.get(CUT_BUDGET_ENV, "").strip()
    try:
        megabytes = float(configured) if configured else DEFAULT_CUT_BUDGET_MB
    except ValueError:
        raise ConfigError(f"{CUT_BUDGET_ENV}={configured!r} is not a number of MiB; set e.g. 2048, or 0 for no "
                          "cut-point cache") from None
    if megabytes < 0:
        raise ConfigError(f"{CUT_BUDGET_ENV}={configured!r} must be 0 or more MiB")
    return int(megabytes * (1 << 20))


def key_id(key: dict[str, Any]) -> str:
    """The SHA-256 of the key's canonical JSON: the entry's file name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.data if array.size else b"")
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArrayCache:
    """A folder of key-addressed array bundles; `get_or_compute` is the one entry point."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder else default_cache_dir()

    def _prepare(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"feature cache folder {self.folder} cannot be created ({error.strerror}); "
                f"set ${CACHE_ENV} or --cache-dir to a writable folder, or set feature_cache: false"
            ) from None

    def path_for(self, key: dict[str, Any]) -> Path:
        return self.folder / f"{key_id(key)}.npz"

    def load(self, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None when absent, unreadable, stored under another key, or not
        matching their checksum (then logged: the caller computes the entry again)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            stat = path.stat()
            with np.load(path, allow_pickle=False) as bundle:
                stored_key = json.loads(str(bundle[_KEY_ENTRY]))
                if stored_key != json.loads(json.dumps(key)):
                    return None
                stored_sum = str(bundle[_CHECKSUM_ENTRY]) if _CHECKSUM_ENTRY in bundle.files else None
                arrays = {name: bundle[name] for name in bundle.files if name not in (_KEY_ENTRY, _CHECKSUM_ENTRY)}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None  # damaged by a crash or a disk error: recompute and overwrite
        memo = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if memo in _verified:
            return arrays
        if stored_sum is None or arrays_sha256(arrays) != stored_sum:
            if memo not in _warned:
                _warned.add(memo)
                reason = ("has no checksum (written by an older medsweep)" if stored_sum is None
                          else "does not match its checksum (damaged or rewritten)")
                _logger.warning("feature cache entry %s %s; computing it again", path, reason)
            return None
        _verified.add(memo)
        return arrays

    def store(self, key: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
        """Write to a temporary file beside the entry, flush it, then rename it into place."""
        self._prepare()
        path = self.path_for(key)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as output:
                np.savez(output, **{_KEY_ENTRY: np.asarray(json.dumps(key, sort_keys=True)),
                                    _CHECKSUM_ENTRY: np.asarray(arrays_sha256(arrays))}, **arrays)
                output.flush()
                os.fsync(output.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    @contextmanager
    def _locked(self, key: dict[str, Any]) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        self._prepare()
        lock_path = self.folder / f".{key_id(key)}.lock"
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except OSError:  # a file system without locks: rely on the atomic rename
                yield
                return
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def get_or_compute(self, key: dict[str, Any],
                       compute: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
        """(arrays, computed): load the entry, or compute and store it. A worker that finds another
        computing the same entry waits for it and then reads its result."""
        found = self.load(key)
        if found is not None:
            return found, False
        with self._locked(key):
            found = self.load(key)
            if found is not None:
                return found, False
            arrays = compute()
            self.store(key, arrays)
            return arrays, True

    def entries(self) -> list[Path]:
        return sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []
