"""Errors every trial would hit (a missing weights file, an unknown backbone, data that is
gone) stop the worker at once with their one line; any other error fails its trial only."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from medsweep.objectives import BackboneError, ConfigError, DataError
from medsweep.search.workers._loop import run_trials

from .conftest import ONE_EPOCH_SPACE, create_study, medsweep, trials


def _sqlite_study(tmp_path: Path) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/fatal.db")
    return storage, optuna.create_study(storage=storage, study_name="fatal")


def test_errors_every_trial_would_hit_are_marked_fatal() -> None:
    assert BackboneError("weights file x does not exist").fatal
    assert DataError("image x cannot be decoded").fatal
    # `create` checks every configuration a space can produce: one that still fails, fails every trial.
    assert ConfigError("image_size 16 is too small for MobileNet").fatal


@pytest.mark.parametrize("error", [BackboneError("weights file /w.h5 does not exist; use weights: none"),
                                   DataError("image /data/a/1.png cannot be decoded (gone); restore the data")])
def test_a_fatal_error_fails_its_trial_and_stops_the_loop_at_once(tmp_path: Path, error: Exception) -> None:
    storage, study = _sqlite_study(tmp_path)
    calls = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        trial.suggest_float("x", 0, 1)
        raise error

    with pytest.raises(type(error)) as raised:
        run_trials(storage, study, objective, n_trials=5, max_consecutive_failures=3)
    assert raised.value is error and calls == [0]
    (only,) = study.get_trials(deepcopy=False)  # failed, recorded, and not retried
    assert only.state == TrialState.FAIL
    assert only.user_attrs["fail_reason"] == f"{type(error).__name__}: {error}"


def test_an_error_of_one_trial_fails_that_trial_only(tmp_path: Path) -> None:
    storage, study = _sqlite_study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise ValueError("NaN loss")
        return x

    summary = run_trials(storage, study, objective, n_trials=4)
    assert [t.state for t in summary.trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert summary.stop_reason == "the study has its 4 trials"


def test_trials_failing_in_a_row_stop_the_loop_with_the_last_reason(tmp_path: Path) -> None:
    from medsweep.search import WorkerError

    storage, study = _sqlite_study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("fail_reason", f"ValueError: NaN loss in trial {trial.number}")
        raise ValueError("NaN loss")

    expected = r"^2 trials in a row failed \(last, trial 1: ValueError: NaN loss in trial 1\)"
    with pytest.raises(WorkerError, match=expected):
        run_trials(storage, study, objective, n_trials=5, max_consecutive_failures=2)
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL] * 2


@pytest.mark.slow
def test_a_worker_whose_weights_file_was_deleted_stops_after_one_trial(storage_url: str, image_folder: Path,
                                                                       tmp_path: Path) -> None:
    weights = tmp_path / "mobilenet_2_5_32_tf_no_top.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n")
    create_study(storage_url, image_folder, tmp_path, name="noweights",
                 space=ONE_EPOCH_SPACE.replace("weights: none", f"weights: {weights}"))
    weights.unlink()
    done = medsweep("worker", "noweights", "--n-trials", "5", "--quiet", storage=storage_url, check=False,
                    env={"CUDA_VISIBLE_DEVICES": "-1"})
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"error: weights file {weights} does not exist;" in done.stderr, output
    assert "Traceback" not in output and done.stderr.count("error: ") == 1, output
    (only,) = trials(storage_url, "noweights")
    assert only.state == TrialState.FAIL and only.user_attrs["fail_reason"].startswith("BackboneError: weights file")
