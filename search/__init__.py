"""Orchestration: studies, search spaces, samplers, pruners, workers, export and the CLI."""

from ._errors import USER_ERRORS, MedsweepError, SpaceError, StudyError, WorkerError
from .results._export import export_best, package_versions, read_export, write_export
from .results._retrain import retrain, train_final, train_from_export
from .results._status import status_report
from .study._space import DEFAULT_SPACE, SURVEY_BACKBONES, SearchSpace
from .study._study import PRUNERS, StudySettings, create_study, load_study, make_pruner, make_sampler
from .workers._worker import WorkerSummary, budget_used, run_worker

__all__ = [
    "DEFAULT_SPACE",
    "MedsweepError",
    "PRUNERS",
    "SURVEY_BACKBONES",
    "SearchSpace",
    "SpaceError",
    "StudyError",
    "StudySettings",
    "USER_ERRORS",
    "WorkerError",
    "WorkerSummary",
    "budget_used",
    "create_study",
    "export_best",
    "load_study",
    "make_pruner",
    "make_sampler",
    "package_versions",
    "read_export",
    "retrain",
    "run_worker",
    "status_report",
    "train_final",
    "train_from_export",
    "write_export",
]
