"""`create`'s grey-level verdict: warn about images that use a sliver of their range, refuse a
folder where most do unless `--intensity` says how to proceed, and fix that choice in the space."""

from __future__ import annotations

from medsweep.objectives.images import IntensityReport

from .._errors import StudyError
from ._space import SearchSpace

INTENSITY_HELP = {
    "raw": "train on the pixels as they are",
    "minmax": "rescale each image to the full range",
    "percentile": "rescale each image's 0.5th-99.5th percentiles to the full range",
}


def apply_intensity(report: IntensityReport, space: SearchSpace, intensity: str | None) -> tuple[SearchSpace, str | None]:
    """The space to store (with `intensity` fixed when given) and a warning line, or a StudyError
    when most images are low range and no `intensity` was chosen."""
    if intensity is not None:
        if "intensity" in space.spec and space.spec["intensity"] != intensity:
            raise StudyError(f"--intensity {intensity} and the space file's intensity {space.spec['intensity']!r} "
                             "disagree; keep one of them")
        space = SearchSpace({**space.spec, "intensity": intensity})
    if not report.low:
        return space, None
    choices = ", ".join(f"--intensity {name} ({text})" for name, text in INTENSITY_HELP.items())
    if report.mostly_low and intensity is None and "intensity" not in space.spec:
        raise StudyError(f"{report.describe()}: to a network they look near-black. Check how the images were "
                         f"exported, or pass {choices}")
    if intensity is None and "intensity" not in space.spec:
        return space, f"warning: {report.describe()}; consider --intensity minmax"
    return space, f"note: {report.describe()}; intensity {space.spec['intensity']!r}"
