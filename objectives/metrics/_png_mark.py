"""medsweep's mark inside the PNG files it writes (a `Software` text chunk naming the kind of
figure), so a later command recognises its own earlier output and may replace it, while any
other PNG in the way is refused unless the user passes --force."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PNG_MARK_KEY = "Software"
_MARK_PREFIX = "medsweep "


def png_mark(kind: str) -> Any:
    """Pillow `pnginfo` carrying the mark for a figure of `kind` (e.g. "reliability diagram")."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_MARK_KEY, _MARK_PREFIX + kind)
    return info


def mark_png_file(path: str | Path, kind: str) -> Path:
    """Add the mark to a PNG another library wrote (re-encoded losslessly by Pillow)."""
    from PIL import Image

    path = Path(path)
    with Image.open(path) as image:
        image.load()
        image.save(path, format="PNG", pnginfo=png_mark(kind))
    return path


def png_kind(path: str | Path) -> str | None:
    """The kind of medsweep figure a PNG file holds, or None when it carries no mark (or is no PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return None
            text = str(getattr(image, "text", {}).get(PNG_MARK_KEY, ""))
    except Exception:  # unreadable, not an image, too large to open: not ours either
        return None
    return text[len(_MARK_PREFIX):] if text.startswith(_MARK_PREFIX) else None
