"""Grey-level checks on decoded images: an image that uses only a sliver of its range (a wrong
export, a 16-bit image written as 8-bit, a re-encode to levels 0-2) looks near-black to a network
and trains to the class prior, while every number downstream looks merely "hard". `create` measures
each image once, while it already decodes every file, and reports or refuses such data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# An image is "low range" below either bound; both are on the 0-255 scale the decoder produces
# (16-bit images are scaled from their own minimum to maximum first, so they are judged on their own range).
MIN_GREY_LEVELS = 16
MIN_P99 = 255 * 0.1
# Above this share of low-range images, `create` refuses unless --intensity says how to proceed.
REFUSE_SHARE = 0.5
_EXAMPLES = 3


def low_range_reason(image: np.ndarray) -> str | None:
    """Why `image` (uint8, any shape) uses only a sliver of the grey range, or None if it does not."""
    levels = int(np.unique(image).size)
    if levels < MIN_GREY_LEVELS:
        return f"{levels} grey level{'s' if levels != 1 else ''}"
    p99 = float(np.percentile(image, 99))
    if p99 < MIN_P99:
        return f"99th percentile {p99:.0f} of 255"
    return None


@dataclass(frozen=True)
class IntensityReport:
    """Which images of a data set use only a sliver of their grey range, and why."""

    total: int
    low: tuple[tuple[Path, str], ...] = ()

    @classmethod
    def measure(cls, paths: Sequence[Path], images: np.ndarray) -> "IntensityReport":
        """Check decoded images (row i belongs to paths[i])."""
        low = tuple((Path(path), reason) for path, image in zip(paths, images)
                    if (reason := low_range_reason(image)) is not None)
        return cls(len(paths), low)

    def __add__(self, other: "IntensityReport") -> "IntensityReport":
        return IntensityReport(self.total + other.total, self.low + other.low)

    @property
    def share(self) -> float:
        return len(self.low) / self.total if self.total else 0.0

    @property
    def mostly_low(self) -> bool:
        return self.share > REFUSE_SHARE

    def describe(self) -> str:
        """One phrase: how many images are low range, with the first examples and their reasons."""
        if not self.low:
            return f"all {self.total} images use the grey range"
        examples = "; ".join(f"{path.parent.name}/{path.name}: {reason}" for path, reason in self.low[:_EXAMPLES])
        more = ", ..." if len(self.low) > _EXAMPLES else ""
        return (f"{len(self.low)} of {self.total} images use only a sliver of the grey range "
                f"(fewer than {MIN_GREY_LEVELS} grey levels or a 99th percentile below 10% of the range; "
                f"{examples}{more})")

    def to_dict(self) -> dict[str, object]:
        """What the study stores: counts and the first few file names (no pixel data)."""
        return {"images": self.total, "low_range": len(self.low),
                "examples": [f"{path.parent.name}/{path.name}: {reason}" for path, reason in self.low[:_EXAMPLES]]}
