"""Studies: creation with the metadata a remote worker needs (data location and fingerprint,
space, objective, pruner), and loading them back with the right sampler and pruner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from medsweep.objectives import ObjectiveError, quoted
from medsweep.objectives.images import DataSpec, ImageDataset
from medsweep.objectives.metrics import METRIC_DIRECTIONS, parse_objective
from medsweep.storage import describe_storage

from .._errors import StudyError
from ._data import absolute_spec
from ._space import SearchSpace
from ._strategy import HYPERBAND_SETTINGS, PRUNERS, make_pruner, make_sampler, spare_baselines

__all__ = ["HYPERBAND_SETTINGS", "METRICS", "PRUNERS", "SETTINGS_KEY", "StudySettings", "create_study",
           "load_study", "make_pruner", "make_sampler", "study_exists"]

METRICS = tuple(METRIC_DIRECTIONS)
SETTINGS_KEY = "medsweep"
# Each file's short content hash, so a changed data folder can be reported file by file.
FILES_KEY = "medsweep_files"
MAX_LISTED_FILES = 50_000  # about 4 MB of JSON; above, a change is reported by count only


@dataclass(frozen=True)
class StudySettings:
    """What `medsweep create` stored on the study (its `medsweep` user attribute)."""

    data: DataSpec
    fingerprint: dict[str, Any]
    space: dict[str, Any]
    metric: str
    direction: str
    pruner: str

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data.to_dict(), "fingerprint": self.fingerprint, "space": self.space,
                "metric": self.metric, "direction": self.direction, "pruner": self.pruner}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "StudySettings":
        return cls(DataSpec.from_dict(values["data"]), values["fingerprint"], values["space"],
                   values["metric"], values["direction"], values["pruner"])

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace(self.space)


def study_exists(storage: Any, name: str) -> bool:
    # A name lookup, not get_all_study_summaries: that one reads every trial (30 s at 10,000 trials).
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


# Optuna stores study names in a VARCHAR(512) column; PostgreSQL refuses longer ones.
MAX_STUDY_NAME_LENGTH = 512


def check_study_name(name: str) -> None:
    """Refuse names the storage cannot hold or a person cannot type back: empty, too long, control characters."""
    if not name.strip():
        raise StudyError("study name is empty; pass a name such as brain-mri-1")
    if len(name) > MAX_STUDY_NAME_LENGTH:
        raise StudyError(f"study name {name[:40]!r}... is {len(name)} characters long; use at most "
                         f"{MAX_STUDY_NAME_LENGTH}")
    if name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise StudyError(f"study name {name!r} has leading/trailing spaces or control characters; remove them")


def create_study(storage: Any, name: str, dataset: ImageDataset, space: SearchSpace, *,
                 metric: str = "auc", pruner: str = "median", resume: bool = False) -> optuna.Study:
    """Create a study with its settings, or reopen it with `resume`; nothing is written when the
    study exists and `resume` is off."""
    check_study_name(name)
    try:
        metric, direction, target_specificity = parse_objective(metric)
    except ObjectiveError as error:
        raise StudyError(str(error)) from None
    if target_specificity is not None and len(dataset.class_names) != 2:
        raise StudyError(
            f"objective {metric} needs two classes, the data has {len(dataset.class_names)}; "
            "choose auc or balanced_accuracy"
        )
    make_pruner(pruner)
    exists = StudyError(
        f"study {name!r} already exists in {describe_storage(storage.url)}; pass --resume to keep "
        "using it, or choose another name"
    )
    if study_exists(storage, name):
        if not resume:
            raise exists
        return _resumed(storage, name, absolute_spec(dataset.spec), space, metric, pruner)
    space.check_every_configuration()
    # Absolute paths: a worker, `status` or `export` may start in any folder (the demo's study
    # was once stored as medsweep-demo/data/TRAIN, which `cd medsweep-demo` then lost).
    settings = StudySettings(absolute_spec(dataset.spec), dataset.fingerprint, space.to_dict(), metric,
                             direction, pruner)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=settings.direction,
                                    sampler=make_sampler(), pruner=make_pruner(pruner))
    except optuna.exceptions.DuplicatedStudyError:
        # Another `create` of this name won the race between our check and our insert.
        if resume:
            return _resumed(storage, name, absolute_spec(dataset.spec), space, metric, pruner)
        raise exists from None
    study.set_user_attr(SETTINGS_KEY, settings.to_dict())
    if len(dataset.file_hashes) <= MAX_LISTED_FILES:
        # A system attribute: optuna-dashboard lists user attributes, and this one is long.
        storage.set_study_system_attr(storage.get_study_id_from_name(name), FILES_KEY, dataset.file_hashes)
    return study


def _resumed(storage: Any, name: str, data: DataSpec, space: SearchSpace, metric: str, pruner: str) -> optuna.Study:
    """The existing study, when the options describe it; `--resume` never changes a study, so
    an option that differs would be silently ignored: refuse, naming each one."""
    import json

    study, settings = load_study(storage, name)

    def plain(value: Any) -> Any:  # as stored: tuples become lists, keys strings
        return json.loads(json.dumps(value))

    differ: list[str] = []
    stored_data, asked_data = plain(settings.data.to_dict()), plain(data.to_dict())
    for key in asked_data:
        if asked_data[key] != stored_data.get(key):
            option = "--data" if key == "data_dir" else f"--{key.replace('_', '-')}"
            differ.append(f"{option} {quoted(stored_data.get(key))}, not {quoted(asked_data[key])}")
    stored_space, asked_space = plain(settings.space), plain(space.to_dict())
    if stored_space != asked_space:
        names = sorted(k for k in stored_space.keys() | asked_space.keys() if stored_space.get(k) != asked_space.get(k))
        differ.append(f"another --space (parameters {', '.join(names)} differ)")
    if metric != settings.metric:
        differ.append(f"--metric {settings.metric}, not {metric}")
    if pruner != settings.pruner:
        differ.append(f"--pruner {settings.pruner}, not {pruner}")
    if differ:
        raise StudyError(f"study {name!r} exists with {'; '.join(differ)}; --resume keeps a study as it was created: "
                         "repeat its options, or choose a new study name")
    return study


def stored_file_hashes(storage: Any, name: str) -> dict[str, str]:
    """The per-file hashes `create_study` stored (empty for studies created before they were kept)."""
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name)).get(FILES_KEY) or {}


def load_study(storage: Any, name: str, *, sampler_seed: int | None = None) -> tuple[optuna.Study, StudySettings]:
    """Open an existing medsweep study with the sampler and pruner its settings name."""
    if not study_exists(storage, name):
        known = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        listing = ", ".join(known) if known else "none"
        raise StudyError(
            f"study {name!r} does not exist in {describe_storage(storage.url)} (studies there: {listing}); "
            "create it with `medsweep create`"
        )
    bare = optuna.load_study(study_name=name, storage=storage)
    raw = bare.user_attrs.get(SETTINGS_KEY)
    if not raw:
        raise StudyError(f"study {name!r} was not created by medsweep (no settings stored); create one with `medsweep create`")
    settings = StudySettings.from_dict(raw)
    # Survey baselines (`medsweep paper`) always train to the end.
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(sampler_seed),
                              pruner=spare_baselines(make_pruner(settings.pruner)))
    return study, settings
