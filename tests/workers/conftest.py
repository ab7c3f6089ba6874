"""Fixtures for worker tests: a private PostgreSQL server per test that restarts or stops it
(so the session's shared server stays up), studies on the tiny image folder, and helpers to
start real `medsweep worker` processes and read a study's trials."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..conftest import TINY_SPACE

REPO = Path(__file__).resolve().parents[2]

# Worker options that make the fault tests quick: a heartbeat every second, a dead worker's
# trial retried 6 s after its last beat.
FAST = ["--heartbeat-interval", "1", "--grace-period", "6"]

ONE_EPOCH_SPACE = TINY_SPACE.replace("epochs: [1, 2]", "epochs: 1")

# Long enough (about 2-4 s) to stop a worker in the middle of fit.
LONG_SPACE = ONE_EPOCH_SPACE.replace("epochs: 1", "epochs: 25")


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass
class PrivateServer:
    """A PostgreSQL server started for one test; `pg_ctl("restart")` and friends act on it."""

    url: str
    password: str
    workdir: Path
    port: int
    max_connections: int
    _as_owner: list[str]
    _pg_ctl: str

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = ["-o", f"-h 127.0.0.1 -p {self.port} -k {self.workdir} -c max_connections={self.max_connections} -c fsync=off"]
        command = [*self._as_owner, self._pg_ctl, "-D", str(self.workdir / "data"), "-l",
                   str(self.workdir / "server.log"), "-w", "-t", "60", *extra, action]
        if action in ("start", "restart"):
            command[-1:-1] = options
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=90)

    def new_database(self) -> str:
        import sqlalchemy
        from sqlalchemy.engine import make_url

        admin = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        name = f"medsweep_{secrets.token_hex(4)}"
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)


def start_private_server(max_connections: int = 100) -> PrivateServer:
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql-15")
    as_owner: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="medsweep-pgw."))
    workdir.chmod(0o755)
    if os.geteuid() == 0:
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
    password = secrets.token_hex(12)
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    subprocess.run([*as_owner, initdb, "-D", str(workdir / "data"), "-U", "postgres", f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    pwfile.unlink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PrivateServer(f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{port}/postgres", password,
                           workdir, port, max_connections, as_owner, pg_ctl)
    server.pg_ctl("start")
    return server


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    server = start_private_server()
    yield server
    try:
        server.pg_ctl("stop", "-m", "immediate")
    except subprocess.SubprocessError:
        pass
    shutil.rmtree(server.workdir, ignore_errors=True)


def medsweep(*args: str, storage: str, timeout: float = 300, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a new process (storage URL in the environment, as in production)."""
    environment = dict(os.environ, MEDSWEEP_STORAGE=storage, **(env or {}))
    done = subprocess.run([sys.executable, "-m", "medsweep.search.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(f"medsweep {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def start_worker(study: str, *args: str, storage: str, log: Path) -> subprocess.Popen:
    """A `medsweep worker` process in the background, output in `log`."""
    environment = dict(os.environ, MEDSWEEP_STORAGE=storage)
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "medsweep.search.cli", "worker", study, *args], stdout=handle,
                            stderr=subprocess.STDOUT, env=environment, cwd=REPO)


LIGHT_WORKER = Path(__file__).with_name("light_worker.py")


def start_light_worker(storage: str, study: str, n_trials: int, step_seconds: float = 0.02,
                       *budget_and_steps: float) -> subprocess.Popen:
    """`light_worker.py` in the background: the real worker loop on a trivial objective."""
    environment = dict(os.environ, MEDSWEEP_STORAGE=storage)
    return subprocess.Popen([sys.executable, str(LIGHT_WORKER), study, str(n_trials), str(step_seconds),
                             *map(str, budget_and_steps)],
                            cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def create_study(storage: str, image_folder: Path, tmp_path: Path, name: str = "w", space: str = ONE_EPOCH_SPACE,
                 pruner: str = "none") -> str:
    space_file = tmp_path / f"{name}-space.yaml"
    space_file.write_text(space)
    medsweep("create", name, "--data", str(image_folder), "--space", str(space_file), "--pruner", pruner,
             storage=storage)
    return name


def trials(storage: str, study: str) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=study, storage=storage)
    return loaded.get_trials(deepcopy=False)


def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


_POLLING: dict[str, Any] = {}


def training_trial(storage: str, study: str) -> Any:
    """A RUNNING trial in the middle of Keras fit (it reported an epoch), or None.

    Polls through one storage per URL: opening a new engine per poll costs about half a second
    on a loaded machine, long enough to miss a trial's few seconds of training.
    """
    import optuna
    from optuna.trial import TrialState

    if storage not in _POLLING:
        _POLLING[storage] = optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    polled = optuna.load_study(study_name=study, storage=_POLLING[storage])
    for trial in polled.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING and trial.intermediate_values:
            return trial
    return None
