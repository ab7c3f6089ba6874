"""The storage password never shows: not in command output, errors, `status`, study or trial
attributes, exported configs or worker logs. The dashboard binds 127.0.0.1 unless told
otherwise, and warns when it is not."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from .conftest import ONE_EPOCH_SPACE, REPO, medsweep

PASSWORD = "Zebra-7781-never-shown"


@pytest.fixture
def user_url(postgres_url: str) -> str:
    """A database owned by a login role whose password is PASSWORD."""
    database = make_url(postgres_url).database
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    role = f"u_{database[-12:]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        connection.execute(sqlalchemy.text(f'ALTER DATABASE "{database}" OWNER TO {role}'))
    admin.dispose()
    return make_url(postgres_url).set(username=role, password=PASSWORD).render_as_string(hide_password=False)


@pytest.mark.slow
@pytest.mark.postgres
def test_password_never_appears(user_url: str, image_folder: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(ONE_EPOCH_SPACE)
    shown = []
    for args in (["create", "s", "--data", str(image_folder), "--space", str(space)],
                 ["worker", "s", "--n-trials", "1", "--quiet"],
                 ["status", "s"],
                 ["export", "s", "-o", str(tmp_path / "best.yaml")]):
        done = medsweep(*args, storage=user_url)
        shown += [done.stdout, done.stderr]
    worker_output = shown[2] + shown[3]
    assert "worker done: ran 1 trials (1 complete)" in worker_output
    assert " epoch " not in worker_output and "started" not in worker_output  # --quiet
    shown.append((tmp_path / "best.yaml").read_text())

    # Errors name the database without the password: a missing study, a wrong password.
    for url, args in ((user_url, ["status", "missing"]),
                      (user_url.replace(PASSWORD, PASSWORD + "x"), ["status", "s"])):
        done = medsweep(*args, storage=url, check=False)
        assert done.returncode == 1 and done.stderr.startswith("error: ")
        assert len(done.stderr.strip().splitlines()) == 1
        shown += [done.stdout, done.stderr]
    assert "***@" in done.stderr and "password authentication failed" in done.stderr  # masked URL, real cause

    study = optuna.load_study(study_name="s", storage=user_url)
    shown.append(json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id)], default=str))
    shown += [json.dumps([t.user_attrs, t.system_attrs, t.params], default=str) for t in study.get_trials()]
    assert not [text for text in shown if PASSWORD in text]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("host, expected, warning", [
    (None, {"127.0.0.1"}, "anyone with an account on this machine can open http://127.0.0.1:"),
    ("0.0.0.0", {"0.0.0.0"}, "anyone who can reach 0.0.0.0:"),
])
def test_dashboard_binds_localhost_unless_told(tmp_path: Path, host: str | None, expected: set[str],
                                               warning: str) -> None:
    """It listens on 127.0.0.1 unless --host says otherwise, and says first, either way, that
    it has no login (who can reach it can read and edit the studies)."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to see where the dashboard listens")
    port = _free_port()
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(storage=storage, study_name="d")
    args = ["dashboard", "--port", str(port), "--storage", storage] + (["--host", host] if host else [])
    server = subprocess.Popen([sys.executable, "-m", "medsweep.search.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening_addresses(port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        assert _listening_addresses(port) == expected
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    first = err.splitlines()[0]
    assert first.startswith("warning: the dashboard has no login: ") and warning in first, err
    assert "read and edit the studies" in first
