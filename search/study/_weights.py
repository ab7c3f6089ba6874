"""The weights files a search space will load, and whether this machine has them: `create`
names them, so an offline worker does not find out at its first trial. Never imports Keras."""

from __future__ import annotations

import textwrap
from typing import Any

from medsweep.objectives import DEFAULT_CONFIG
from medsweep.objectives.config import WeightsFile, find_weights_file, get_backbone

from ._space import Categorical, Fixed, SearchSpace

WEIGHTS_GUIDE = "docs/user-guide.md, 'Weights on a machine without internet'"


def _values(space: SearchSpace, name: str) -> list[Any]:
    """The values a trial may take for `name`: a range gives its ends, or every integer in it
    (an image size changes which MobileNet file Keras downloads)."""
    parameter = space.parameters.get(name)
    if parameter is None:
        return [getattr(DEFAULT_CONFIG, name)]
    if isinstance(parameter, Fixed):
        return [parameter.value]
    if isinstance(parameter, Categorical):
        return list(parameter.choices)
    if parameter.integer:
        return list(range(int(parameter.low), int(parameter.high) + 1))
    return [parameter.low, parameter.high]


def weights_files(space: SearchSpace) -> list[WeightsFile]:
    """Each weights file a trial of `space` may load, in backbone order, once."""
    found: dict[tuple[str, str], WeightsFile] = {}
    for name in _values(space, "backbone"):
        backbone = get_backbone(name)
        for weights in _values(space, "weights"):
            # Only MobileNet's files depend on the input size and the width.
            for size in _values(space, "image_size") if backbone.has_alpha else [None]:
                for alpha in _values(space, "alpha") if backbone.has_alpha else [1.0]:
                    file = find_weights_file(backbone, weights, size or backbone.default_size, alpha)
                    if file is not None:
                        found.setdefault((str(file.folder), file.name), file)
    return list(found.values())


def describe_weights(files: list[WeightsFile]) -> list[str]:
    """`create`'s lines on them: per folder, each file present or missing, and what happens to
    the missing ones (Keras downloads ImageNet files; a weights folder's must be copied)."""
    lines: list[str] = []
    folders: dict[str, list[WeightsFile]] = {}
    for file in files:
        folders.setdefault(str(file.folder), []).append(file)
    for folder, group in folders.items():
        missing = sum(file.found is None for file in group)
        kind = "ImageNet weights file" if group[0].imagenet else "weights file"
        plural = "s" if len(group) > 1 else ""
        have = "all present" if not missing else "none present" if missing == len(group) else f"{missing} missing"
        lines.append(f"weights: the space needs {len(group)} {kind}{plural} from {folder}, {have} on this machine:")
        # A found file may be another input size's (MobileNet's convolutions fit any size).
        lines += [f"  present  {file.found.name} ({file.backbone})" if file.found else
                  f"  missing  {file.name} ({file.backbone})" for file in group]
        if missing and group[0].imagenet:
            advice = (f"A worker downloads each missing file at the first trial that needs it, and stops there "
                      f"without internet access. Offline, copy the files into {folder} on every worker machine, "
                      f"or point `weights:` at a folder holding them ({WEIGHTS_GUIDE}).")
        elif missing:
            advice = ("A worker stops at the first trial that needs a missing file; copy the files into that "
                      f"folder on every worker machine ({WEIGHTS_GUIDE}).")
        else:
            continue
        lines += textwrap.wrap(advice, 78, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
    return lines
