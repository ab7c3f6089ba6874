"""Text that users hand to medsweep and text medsweep shows back: reading a text file (CSV,
YAML) with a one-line error when it is not UTF-8 text, and quoting a user's value in an error
message at a bounded length (a 1 KB YAML file can expand to hundreds of MB)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The longest quoted value an error message shows; the rest is counted, not printed.
QUOTED_LIMIT = 80
# Space files, exports and manifests are small; a larger file is a wrong path (an image, a model).
MAX_TEXT_FILE_BYTES = 64 * 1024 * 1024


def quoted(value: Any, limit: int = QUOTED_LIMIT) -> str:
    """`repr(value)` for an error message, cut to `limit` characters with the full length named."""
    try:
        text = repr(value)
    except RecursionError:  # a self-referencing structure (YAML anchors can build one)
        return f"<{type(value).__name__} that contains itself>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as a person can read it, also when its name is not valid UTF-8 (bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8_name(path: str | os.PathLike[str]) -> bool:
    """False for a path whose bytes are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_text_file(path: str | os.PathLike[str], what: str, hint: str, error: type[Exception],
                   max_bytes: int = MAX_TEXT_FILE_BYTES) -> str:
    """The file's text (UTF-8, a byte-order mark allowed), or `error` with one line saying why it
    is not: unreadable, too large, binary, UTF-16 or another encoding. `what` names the file
    ("search space file"), `hint` says what to pass instead."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} {shown_path(path)} is {size / 1e6:.0f} MB, too large for a {what}; {hint}")
        data = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{what} {shown_path(path)} is a folder; {hint}") from None
    except OSError as problem:
        raise error(f"cannot read {what} {shown_path(path)} ({problem.strerror}); {hint}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{what} {shown_path(path)} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        if b"\x00" in data[:8192]:
            raise error(f"{what} {shown_path(path)} is a binary file, not text; {hint}") from None
        line = data[:problem.start].count(b"\n") + 1
        raise error(f"{what} {shown_path(path)} is not UTF-8 text (byte 0x{data[problem.start]:02x} on line {line}); "
                    "save it as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)") from None
    if "\x00" in text:
        raise error(f"{what} {shown_path(path)} is a binary file, not text; {hint}")
    return text
