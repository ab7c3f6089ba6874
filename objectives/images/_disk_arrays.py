"""Decoded images on disk, for data sets larger than the memory budget.

Below the budget (a quarter of physical memory, or $MEDSWEEP_MEMORY_LIMIT_MB) decoded images
stay in memory. Above it they are decoded once per image size into `.npy` files in
`<feature cache folder>/decoded/` and read back memory-mapped, one file per split so that a
split is a contiguous array and training reads it batch by batch (see `make_dataset`)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._array_cache import default_cache_dir
from ._formats import decode_images

MEMORY_ENV = "MEDSWEEP_MEMORY_LIMIT_MB"
_logger = logging.getLogger("medsweep.data")
_CHUNK = 64


def memory_limit_bytes() -> int:
    """How many bytes of decoded images a worker keeps in memory before going to disk."""
    configured = os.environ.get(MEMORY_ENV, "").strip()
    if configured:
        return int(float(configured) * 2**20)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 * 2**30


def fits_in_memory(count: int, image_size: int) -> bool:
    return count * image_size * image_size * 3 <= memory_limit_bytes()


def decoded_folder() -> Path:
    return default_cache_dir() / "decoded"


def index_digest(index: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _rows_digest(array: np.ndarray, start: int = 0, stop: int | None = None,
                 digest: "hashlib._Hash | None" = None) -> "hashlib._Hash":
    """SHA-256 over rows `start:stop`, a chunk at a time (a memory-mapped file is never read whole)."""
    digest = digest or hashlib.sha256()
    stop = len(array) if stop is None else stop
    for first in range(start, stop, _CHUNK):
        digest.update(np.ascontiguousarray(array[first:min(stop, first + _CHUNK)]).data)
    return digest


def _load_verified(path: Path, shape: tuple[int, ...]) -> np.memmap | None:
    """The existing file if its shape and checksum match what was written, else None (logged).

    A file damaged after it was written (disk error, a copy cut short, a stray write) would
    otherwise be trained on silently and its features cached for every later trial."""
    try:
        existing = np.load(path, mmap_mode="r")
        expected = _checksum_path(path).read_text().strip()
    except (OSError, ValueError) as error:
        reason = f"unreadable ({error})"
    else:
        if existing.shape != shape or existing.dtype != np.uint8:
            reason = f"shape {existing.shape} {existing.dtype}, expected {shape} uint8"
        elif _rows_digest(existing).hexdigest() != expected:
            reason = "checksum mismatch"
        else:
            return existing
        del existing
    _logger.warning("decoded images %s are damaged (%s); decoding them again", path, reason)
    return None


def _write_once(path: Path, count: int, image_size: int,
                fill: Callable[[np.ndarray, int, int], None]) -> np.memmap:
    """Create `path` (uint8, count x size x size x 3) chunk by chunk unless a complete one with a
    matching checksum is there; written under a temporary name and renamed, so readers never
    see half a file, with its SHA-256 beside it in `<name>.sha256`."""
    shape = (count, image_size, image_size, 3)
    if path.is_file():
        existing = _load_verified(path, shape)
        if existing is not None:
            return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
    digest = hashlib.sha256()
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        fill(array, start, stop)
        _rows_digest(array, start, stop, digest)
    array.flush()
    del array
    # The checksum goes first: a reader that sees the new data always finds its checksum (the
    # data are deterministic, so a concurrent writer's checksum is the same).
    checksum_temporary = temporary.with_name(temporary.name + ".sha256")
    checksum_temporary.write_text(digest.hexdigest() + "\n")
    os.replace(checksum_temporary, _checksum_path(path))
    os.replace(temporary, path)
    return np.load(path, mmap_mode="r")


def decode_to_disk(paths: Sequence[Path], image_size: int, path: Path, decoding: Any = None) -> np.memmap:
    """Decode `paths` at `image_size` (with `decoding`, a `_formats.Decoding`) into a memory-mapped
    `.npy` file, a chunk at a time; `path` must name the decoding settings (the caller's key)."""
    def fill(array: np.ndarray, start: int, stop: int) -> None:
        array[start:stop] = decode_images(paths[start:stop], image_size, decoding)

    return _write_once(path, len(paths), image_size, fill)


def take_to_disk(images: np.ndarray, index: np.ndarray, path: Path) -> np.memmap:
    """`images[index]` as its own memory-mapped file (fancy indexing would copy into memory)."""
    index = np.asarray(index, dtype=np.int64)

    def fill(array: np.ndarray, start: int, stop: int) -> None:
        array[start:stop] = images[index[start:stop]]

    return _write_once(path, len(index), images.shape[1], fill)
