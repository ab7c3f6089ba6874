"""`medsweep worker`: one worker process per GPU (each seeing only its GPU), or N CPU workers,
supervised: a worker that crashes is started again, SIGTERM/SIGINT reach every worker, and the
exit status says how the workers ended. A single worker runs in this process (a container's
PID 1 then handles SIGTERM itself). TensorFlow is never imported here before the GPU choice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from medsweep.storage import STORAGE_ENV

from .._errors import WorkerError

LABEL_ENV = "MEDSWEEP_WORKER_LABEL"
SUPERVISOR_ENV = "MEDSWEEP_SUPERVISOR_PID"  # a child worker stops when this process is gone
ORPHAN_POLL_SECONDS = 1.0
PR_SET_PDEATHSIG = 1
HIDE_GPUS = "-1"
RESTART_DELAY_SECONDS = 2.0
STOP_WAIT_SECONDS = 9.5


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process: its label and the CUDA_VISIBLE_DEVICES it runs with."""

    label: str
    cuda_visible_devices: str


def detect_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """GPU ids this process may use, without TensorFlow: CUDA_VISIBLE_DEVICES when set (empty
    or -1 hides all), else the indices `nvidia-smi -L` lists, else none."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        return [] if not ids or ids[0].startswith("-") else ids
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    return [m.group(1) for line in listing.stdout.splitlines() if (m := re.match(r"\s*GPU (\d+):", line))]


def plan_workers(gpus: str | None, workers: int | None, detected: Sequence[str]) -> tuple[list[WorkerSlot], str]:
    """The worker processes to start and a note for the user (empty when nothing to say).

    `gpus`: None (every GPU found, else one CPU worker), "all", "none" or "0,1,3"."""
    if gpus is not None and workers is not None:
        raise WorkerError("give either --gpus (one worker per GPU) or --workers N (CPU workers), not both")
    if workers is not None:
        if workers < 1:
            raise WorkerError(f"--workers must be at least 1, got {workers}")
        return [WorkerSlot(f"cpu{i}", HIDE_GPUS) for i in range(workers)], ""
    choice = (gpus or "all").strip().lower()
    if choice in ("none", "cpu"):
        return [WorkerSlot("cpu0", HIDE_GPUS)], ""
    if choice == "all":
        if not detected:
            note = "no GPU found (CUDA_VISIBLE_DEVICES, nvidia-smi -L); running one CPU worker" if gpus else ""
            return [WorkerSlot("cpu0", HIDE_GPUS)], note
        return [WorkerSlot(f"gpu{gpu}", gpu) for gpu in detected], ""
    requested = [part.strip() for part in gpus.split(",") if part.strip()]  # type: ignore[union-attr]
    if not requested:
        raise WorkerError(f"--gpus {gpus!r} names no GPU; use all, none, or ids such as 0,1,3")
    duplicates = sorted({g for g in requested if requested.count(g) > 1})
    if duplicates:
        raise WorkerError(f"--gpus {gpus!r} names GPU {', '.join(duplicates)} twice; list each GPU once")
    if not detected:
        raise WorkerError(
            f"--gpus {gpus} but no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi -L); "
            "drop --gpus to run a CPU worker, or use --workers N"
        )
    missing = [g for g in requested if g not in detected]
    if missing:
        raise WorkerError(
            f"--gpus {gpus}: GPU {', '.join(missing)} not found; this machine shows {', '.join(detected)}"
        )
    return [WorkerSlot(f"gpu{gpu}", gpu) for gpu in requested], ""


@dataclass(frozen=True)
class WorkerOptions:
    """Everything one worker process needs besides the storage URL and the study."""

    n_trials: int | None = None
    timeout: float | None = None
    max_failures: int = 3
    data_dir: str | None = None
    max_retries: int = 2
    heartbeat_interval: int = 10
    grace_period: int = 40
    db_down_limit: float = 300.0
    quiet: bool = False
    budget: float | None = None  # the study's wall budget in seconds (the first worker starts it)
    seed: int | None = None  # the TPE sampler's base seed (None: drawn afresh); see child_arguments

    def child_arguments(self, seed_offset: int = 0) -> list[str]:
        """The same options for a child `medsweep worker` process (never the storage URL:
        that travels in the environment, so `ps` cannot show its password). Each child gets its
        own sampler seed, `seed + seed_offset`: TPE's random start-up draws come from a per-process
        stream, so children sharing one seed would all try the same first configurations."""
        args = ["--max-failures", str(self.max_failures), "--max-retries", str(self.max_retries),
                "--heartbeat-interval", str(self.heartbeat_interval), "--grace-period", str(self.grace_period),
                "--db-down-limit", f"{self.db_down_limit:g}"]
        if self.n_trials is not None:
            args += ["--n-trials", str(self.n_trials)]
        if self.timeout is not None:
            args += ["--timeout", f"{self.timeout:g}"]
        if self.budget is not None:
            args += ["--budget", f"{self.budget:f}s"]  # :g writes 2.592e+06, which is not a duration
        if self.data_dir:
            args += ["--data", self.data_dir]
        if self.quiet:
            args.append("--quiet")
        if self.seed is not None:
            args += ["--seed", str(self.seed + seed_offset)]
        return args


def child_command(study: str, options: WorkerOptions, seed_offset: int = 0) -> list[str]:
    return [sys.executable, "-m", "medsweep.search.cli", "worker", study, "--in-process",
            *options.child_arguments(seed_offset)]


def open_worker_storage(storage_url: str, options: WorkerOptions) -> Any:
    """The study storage with heartbeats, retries of dead workers' trials and database-restart
    tolerance."""
    import warnings

    import optuna

    from medsweep.storage import open_storage

    from ._budget import make_retry_callback

    if options.grace_period <= options.heartbeat_interval:
        raise WorkerError(
            f"--grace-period ({options.grace_period} s) must be longer than --heartbeat-interval "
            f"({options.heartbeat_interval} s), or live workers' trials would be taken as dead"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return open_storage(storage_url, heartbeat_interval=options.heartbeat_interval,
                            grace_period=options.grace_period,
                            stale_trial_callback=make_retry_callback(options.max_retries),
                            db_down_limit=options.db_down_limit)


def run_in_process(storage_url: str, study: str, options: WorkerOptions, label: str = "",
                   echo: Callable[[str], None] = print, shared: bool = False) -> int:
    """One worker in this process; returns its exit status (128 + signal when stopped).

    `shared`: a supervisor's child, whose output other workers share."""
    from ._loop import StopRequest
    from ._progress import Progress
    from ._worker import work_on_study

    # Optuna's verbosity is the CLI's (`--verbose`, or MEDSWEEP_VERBOSE inherited by children).
    stop = StopRequest()
    stop.install()
    _stop_when_orphaned(stop)
    progress = Progress.choose(options.quiet, label, shared=shared)
    try:
        storage = open_worker_storage(storage_url, options)
        summary = work_on_study(storage, study, n_trials=options.n_trials, timeout=options.timeout,
                                max_consecutive_failures=options.max_failures, max_retries=options.max_retries,
                                data_dir=options.data_dir, stop=stop, progress=progress, budget=options.budget,
                                sampler_seed=options.seed)
    finally:
        progress.close()
        stop.restore()
    states = sorted({t.state.name.lower() for t in summary.trials})
    counts = ", ".join(f"{sum(t.state.name.lower() == s for t in summary.trials)} {s}" for s in states)
    prefix = f"[{label}] " if label else ""
    echo(f"{prefix}worker done: ran {len(summary.trials)} trials ({counts or 'none'}); {summary.stop_reason}")
    return summary.exit_code


def _stop_when_orphaned(stop: Any) -> None:
    """A supervisor's child stops (handing its trial back) when the supervisor is gone, even
    after SIGKILL: Linux sends SIGTERM on the parent's death (set before exec), and this
    watcher covers other systems and a supervisor that died before that was set."""
    import threading

    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return

    def watch() -> None:
        while not stop.event.wait(ORPHAN_POLL_SECONDS):
            if os.getppid() != int(supervisor):
                stop.request(signal.SIGTERM)
                return

    threading.Thread(target=watch, name="medsweep-orphan-watch", daemon=True).start()


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that asks Linux to send the child SIGTERM when the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def supervise(storage_url: str, study: str, slots: Sequence[WorkerSlot], options: WorkerOptions, *,
              max_restarts: int = 3, echo: Callable[[str], None] = print) -> int:
    """Start one child worker per slot and watch them until all are done.

    A child that crashes (killed, segfault, out of memory) is started again, at most
    `max_restarts` times per slot; its trial is retried by the heartbeat mechanism. A child that
    stops for a reason the user must fix (exit status 1) is not. SIGTERM/SIGINT are passed to
    every child, which hand their trials back; stragglers are killed after a few seconds."""
    stop_signal: list[int] = []

    def on_signal(number: int, _frame: Any) -> None:
        if not stop_signal:
            stop_signal.append(number)
            echo(f"{signal.Signals(number).name}: stopping {len(running)} worker(s)")
            for process in running.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)

    die_with_parent = _die_with_parent()

    def start(slot: WorkerSlot) -> subprocess.Popen:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=slot.cuda_visible_devices, **{LABEL_ENV: slot.label,
                   STORAGE_ENV: storage_url, SUPERVISOR_ENV: str(os.getpid())})
        # Own session: a terminal's Ctrl-C reaches the supervisor only, which forwards it once.
        # Seeds differ per slot and per restart: a restarted child must not redraw its first trials.
        offset = slots.index(slot) + len(slots) * restarts.get(slot, 0)
        return subprocess.Popen(child_command(study, options, offset), env=env, start_new_session=True,
                                preexec_fn=die_with_parent)

    running: dict[WorkerSlot, subprocess.Popen] = {}
    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    restarts = {slot: 0 for slot in slots}
    failed: dict[WorkerSlot, str] = {}
    try:
        for slot in slots:
            running[slot] = start(slot)
        echo(f"started {len(slots)} workers: " + ", ".join(
            f"{s.label} (pid {running[s].pid}, CUDA_VISIBLE_DEVICES={s.cuda_visible_devices})" for s in slots))
        stop_deadline: float | None = None
        while running:
            if stop_signal and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_WAIT_SECONDS
            if stop_deadline is not None and time.monotonic() >= stop_deadline:
                for slot, process in running.items():
                    if process.poll() is None:
                        echo(f"{slot.label} did not stop in time; killing it (its trial is retried later)")
                        process.kill()
                        process.wait()
                running.clear()
                break
            for slot, process in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[slot]
                if code == 0 or stop_signal or code in (128 + signal.SIGTERM, 128 + signal.SIGINT):
                    continue
                if code in (1, 2):
                    failed[slot] = f"{slot.label} stopped ({_describe_exit(code)})"
                    continue
                if restarts[slot] >= max_restarts:
                    failed[slot] = f"{slot.label} crashed {restarts[slot] + 1} times ({_describe_exit(code)})"
                    continue
                restarts[slot] += 1
                echo(f"{slot.label} crashed ({_describe_exit(code)}); restarting it "
                     f"({restarts[slot]}/{max_restarts}); its trial will be retried")
                time.sleep(RESTART_DELAY_SECONDS)
                if not stop_signal:
                    running[slot] = start(slot)
            time.sleep(0.2)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop_signal:
        return 128 + stop_signal[0]
    if failed:
        raise WorkerError("; ".join(failed[slot] for slot in slots if slot in failed) + "; see the messages above")
    return 0


def worker_command(storage_url: str, study: str, options: WorkerOptions, *, gpus: str | None = None,
                   workers: int | None = None, in_process: bool = False,
                   echo: Callable[[str], None] = print) -> int:
    """What `medsweep worker` does; returns the process exit status."""
    from medsweep.storage import resolve_storage_url

    url = resolve_storage_url(storage_url)
    if in_process:
        label = os.environ.get(LABEL_ENV, "")
        return _stopped_fast(run_in_process(url, study, options, label, echo, shared=SUPERVISOR_ENV in os.environ))
    slots, note = plan_workers(gpus, workers, detect_gpus())
    if note:
        echo(f"note: {note}")
    if len(slots) == 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = slots[0].cuda_visible_devices  # before TensorFlow loads
        return _stopped_fast(run_in_process(url, study, options, slots[0].label, echo))
    return supervise(url, study, slots, options, echo=echo)


def _stopped_fast(code: int) -> int:
    """A worker stopped by a signal has handed its trial back: leave at once (see `leave_now`)."""
    if code > 128:
        from ._loop import leave_now

        leave_now(code)
    return code
