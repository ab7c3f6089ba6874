"""GPU detection and worker planning (no TensorFlow in the supervising process), the supervisor
with real child processes, and the progress display."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from medsweep.search import WorkerError
from medsweep.search.workers._progress import Progress, study_progress
from medsweep.search.workers._supervisor import WorkerOptions, WorkerSlot, child_command, detect_gpus, plan_workers
from medsweep.search.cli import main

from .conftest import REPO


def test_detect_gpus_reads_cuda_visible_devices_first() -> None:
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5e1c,GPU-77aa"}) == ["GPU-5e1c", "GPU-77aa"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_detect_gpus_asks_nvidia_smi_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus({}) == []  # no nvidia-smi: no GPU
    tool = tmp_path / "nvidia-smi"
    # What `nvidia-smi -L` prints on a machine with three GPUs.
    tool.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 9\n"
                    "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0f2a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-1b3c)'\n"
                    "echo 'GPU 3: NVIDIA H200 (UUID: GPU-3d4e)'\n")
    tool.chmod(0o755)
    assert detect_gpus({}) == ["0", "1", "3"]


def test_plan_one_worker_per_gpu_or_cpu_workers() -> None:
    gpus = ["0", "1", "3"]
    assert plan_workers(None, None, gpus)[0] == [WorkerSlot("gpu0", "0"), WorkerSlot("gpu1", "1"), WorkerSlot("gpu3", "3")]
    assert plan_workers("all", None, gpus)[0] == plan_workers(None, None, gpus)[0]
    assert plan_workers("0,3", None, gpus)[0] == [WorkerSlot("gpu0", "0"), WorkerSlot("gpu3", "3")]
    assert plan_workers(None, 3, gpus)[0] == [WorkerSlot(f"cpu{i}", "-1") for i in range(3)]
    assert plan_workers("none", None, gpus)[0] == [WorkerSlot("cpu0", "-1")]
    # No GPU: one CPU worker, with a note only when GPUs were asked for.
    assert plan_workers(None, None, []) == ([WorkerSlot("cpu0", "-1")], "")
    slots, note = plan_workers("all", None, [])
    assert slots == [WorkerSlot("cpu0", "-1")] and "no GPU found" in note


@pytest.mark.parametrize("gpus, workers, detected, message", [
    ("0,5", None, ["0", "1"], "GPU 5 not found; this machine shows 0, 1"),
    ("1,1", None, ["0", "1"], "names GPU 1 twice"),
    ("0", None, [], "no GPU is visible"),
    ("0", 2, ["0"], "not both"),
    (",", None, ["0"], "names no GPU"),
])
def test_plan_rejects_bad_gpu_lists(gpus: str, workers: int | None, detected: list[str], message: str) -> None:
    with pytest.raises(WorkerError, match=message):
        plan_workers(gpus, workers, detected)


def test_worker_cli_reports_a_bad_gpu_list_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    result = CliRunner().invoke(main, ["worker", "s", "--gpus", "2", "--storage", f"sqlite:///{tmp_path}/s.db"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --gpus 2: GPU 2 not found; this machine shows 0, 1"


def test_child_command_carries_no_storage_url() -> None:
    options = WorkerOptions(n_trials=20, data_dir="/data/x", quiet=True)
    command = child_command("study", options)
    assert command[:4] == [sys.executable, "-m", "medsweep.search.cli", "worker"] and "--in-process" in command
    assert "--storage" not in command and not any("://" in part for part in command)
    assert command[command.index("--n-trials") + 1] == "20" and "--quiet" in command
    assert "--seed" not in command
    # --seed S --workers N: worker i draws with seed S + i (TPE's start-up draws are per process)
    seeded = [child_command("study", WorkerOptions(seed=7), offset) for offset in (0, 1)]
    assert [c[c.index("--seed") + 1] for c in seeded] == ["7", "8"]


def test_supervisor_runs_children_without_importing_tensorflow(tmp_path: Path) -> None:
    """A real supervisor run: two children (CPU, no GPU visible) that stop on a user error (the
    study does not exist); the supervisor reports both and never loads TensorFlow itself."""
    script = f"""
import sys
from medsweep.search.workers._supervisor import WorkerOptions, worker_command
from medsweep.search import WorkerError
try:
    worker_command("sqlite:///{tmp_path}/s.db", "missing", WorkerOptions(), workers=2)
except WorkerError as error:
    print("WorkerError:", error)
print("tensorflow loaded:", "tensorflow" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "started 2 workers: cpu0 (pid" in done.stdout and "CUDA_VISIBLE_DEVICES=-1" in done.stdout
    assert "WorkerError: cpu0 stopped (exit status 1); cpu1 stopped (exit status 1)" in done.stdout
    assert "study 'missing' does not exist" in done.stderr  # each child's own one-line error
    assert "tensorflow loaded: False" in done.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _study_with_history() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    start = datetime(2026, 1, 1)
    for number, value in enumerate([0.71, 0.86, 0.78]):
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=optuna.trial.TrialState.COMPLETE, value=value,
            params={"learning_rate": 0.001},
            distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)},
            datetime_start=start, datetime_complete=start + timedelta(seconds=60), user_attrs={},
            system_attrs={}, intermediate_values={}))
    study.ask()  # one trial running on some worker
    return study


def test_progress_snapshot_counts_budget_best_and_eta() -> None:
    snapshot = study_progress(_study_with_history(), budget=10)
    assert (snapshot.done, snapshot.budget, snapshot.running) == (3, 10, 1)
    assert (snapshot.best_value, snapshot.best_number) == (0.86, 1)
    assert snapshot.eta_seconds == pytest.approx(7 * 60)  # 7 trials left, 60 s each, 1 running
    assert snapshot.describe() == "3/10 done | best 0.8600 (trial 1) | ETA 7m00s"


def test_progress_is_a_live_rich_line_on_a_terminal_and_silent_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    study = _study_with_history()
    terminal = _Terminal()
    progress = Progress.choose(quiet=False, stream=terminal)
    assert progress.mode == "rich"
    progress.trial_started(3, {}, study_progress(study, 10), None)
    progress.epoch(2, 5, {"val_auc": 0.8123, "loss": 0.5})
    progress.close()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())
    assert "trial 3 epoch 2/5 val_auc 0.8123" in shown and "3/10" in shown and "ETA 7m00s" in shown

    assert Progress.choose(quiet=False, stream=io.StringIO()).mode == "plain"
    assert Progress.choose(quiet=False, label="gpu1", stream=_Terminal(), shared=True).mode == "plain"
    silent = io.StringIO()
    quiet = Progress.choose(quiet=True, stream=silent)
    quiet.trial_started(3, {}, study_progress(study, 10), None)
    quiet.epoch(1, 5, {"val_auc": 0.5})
    assert silent.getvalue() == ""


def test_every_progress_line_carries_the_worker_label_and_cross_validation_names_the_fold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    study = _study_with_history()
    lines = io.StringIO()
    progress = Progress.choose(quiet=False, label="gpu1", stream=lines, shared=True)
    progress.folds = 5
    progress.trial_started(5, {}, study_progress(study, 10), None)
    for fold in range(2):
        progress.fit_started()  # the worker's Keras callback, at each fold's fit
        progress.epoch(3, 20, {"val_auc": 0.8})
    progress.waiting(1)
    progress.warning("disk almost full")
    shown = lines.getvalue().splitlines()
    assert "[gpu1] trial 5 fold 2/5 epoch 3/20 val_auc 0.8000" in shown[-3]
    assert all("[gpu1] " in line for line in shown), shown

    terminal = _Terminal()  # a single worker on a terminal: the live line carries the label too
    live = Progress.choose(quiet=False, label="cpu0", stream=terminal)
    assert live.mode == "rich"
    live.trial_started(3, {}, study_progress(study, 10), None)
    live.epoch(1, 5, {"val_auc": 0.5})
    live.close()
    assert "[cpu0] trial 3 epoch 1/5" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())


def test_docker_and_kubernetes_worker_commands_parse_with_this_cli() -> None:
    """The compose service and the Kubernetes Job start `medsweep worker STUDY --gpus ...`:
    the options they pass must be ones this CLI accepts."""
    import yaml

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    job = yaml.safe_load((REPO / "docker" / "k8s" / "worker-job.yaml").read_text())
    commands = [compose["services"]["worker"]["command"],
                job["spec"]["template"]["spec"]["containers"][0]["args"]]
    worker = main.commands["worker"]
    for command in commands:
        assert command[0] == "worker" and "--gpus" in command
        context = worker.make_context("worker", [part.replace("${", "").replace("$(", "") for part in command[1:]])
        assert context.params["gpus"]


def test_stop_request_hears_a_signal_while_the_main_thread_is_busy_and_a_second_one_leaves() -> None:
    """SIGTERM while the main thread sits in one long C call: the stop flag is set at once (the
    worker's Keras callback and hard-stop timer rely on it), not when the call returns. A
    second SIGTERM ends the process with status 143."""
    script = """
import hashlib, os, signal, threading, time
from medsweep.search.workers._loop import StopRequest
stop = StopRequest(); stop.install()
start = time.monotonic(); seen = []
threading.Thread(target=lambda: (stop.event.wait(), seen.append(time.monotonic() - start))).start()
threading.Thread(target=lambda: (time.sleep(0.2), os.kill(os.getpid(), signal.SIGTERM))).start()
hashlib.sha256(b"x" * (600 * 1024 * 1024)).digest()  # one long C call in the main thread
busy = time.monotonic() - start
print(f"flag after {seen[0]:.2f} s, main thread busy for {busy:.2f} s", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 143, done.stderr
    flagged, busy = (float(x) for x in re.findall(r"(\d+\.\d+) s", done.stdout))
    assert flagged < busy - 0.1 or busy < 0.4, done.stdout  # (a fast machine may finish the hash first)
    assert "SIGTERM: handing the current trial back" in done.stdout


@pytest.mark.slow
def test_a_cross_validated_worker_names_the_fold_on_every_epoch_line(image_folder: Path, tmp_path: Path) -> None:
    """A real worker (one process, no terminal) on a 2-fold study: `[cpu0] trial 0 fold 2/2 epoch 1/1`."""
    from .conftest import ONE_EPOCH_SPACE, medsweep

    storage = f"sqlite:///{tmp_path / 'cv.db'}"
    space = tmp_path / "space.yaml"
    space.write_text(ONE_EPOCH_SPACE)
    medsweep("create", "cv", "--data", str(image_folder), "--space", str(space), "--cv", "2", "--pruner", "none",
             storage=storage)
    done = medsweep("worker", "cv", "--n-trials", "1", storage=storage, env={"CUDA_VISIBLE_DEVICES": "-1"})
    epochs = [line for line in done.stderr.splitlines() if " epoch " in line]
    assert [re.sub(r"^\S+ ", "", line).split(" val_")[0] for line in epochs] == [
        "[cpu0] trial 0 fold 1/2 epoch 1/1", "[cpu0] trial 0 fold 2/2 epoch 1/1"], done.stderr
    assert "[cpu0] worker done: ran 1 trials (1 complete)" in done.stdout, done.stdout
