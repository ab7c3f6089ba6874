"""One storage suite over SQLite and a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from medsweep.storage import StorageError, check_storage, mask_url, open_storage, resolve_storage_url


def test_mask_url_hides_password() -> None:
    assert mask_url("postgresql+psycopg2://ann:s3cr%40t@db:5432/studies") == "postgresql+psycopg2://ann:***@db:5432/studies"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSWEEP_STORAGE", raising=False)
    assert resolve_storage_url(None) == "sqlite:///medsweep.db"
    monkeypatch.setenv("MEDSWEEP_STORAGE", "postgres://u:p@h/db")
    assert resolve_storage_url(None) == "postgresql+psycopg2://u:p@h/db"
    assert resolve_storage_url("sqlite:///other.db") == "sqlite:///other.db"


@pytest.mark.parametrize("url", ["redis://localhost", "not a url"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(StorageError, match="not"):
        resolve_storage_url(url)


def test_sqlite_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        resolve_storage_url(f"sqlite:///{tmp_path}/nope/studies.db")


def test_opens_optuna_storage(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=open_storage(storage_url)).trials) == 2


def test_unreachable_server_names_host_and_masks_password() -> None:
    url = "postgresql+psycopg2://ann:hunter2secret@127.0.0.1:9/studies"
    with pytest.raises(StorageError) as info:
        check_storage(url)
    message = str(info.value)
    assert "127.0.0.1:9" in message and "studies" in message and "hunter2secret" not in message
    assert "\n" not in message and "is the server running" in message


def test_wrong_password_and_missing_database(postgres_url: str) -> None:
    url = make_url(postgres_url)
    wrong = url.set(password="definitely-wrong-pw").render_as_string(hide_password=False)
    with pytest.raises(StorageError, match="wrong user name or password") as info:
        check_storage(wrong)
    assert "definitely-wrong-pw" not in str(info.value) and str(url.password) not in str(info.value)
    missing = url.set(database="no_such_db").render_as_string(hide_password=False)
    with pytest.raises(StorageError, match="database 'no_such_db' does not exist") as info:
        check_storage(missing)
    assert str(url.password) not in str(info.value)


@pytest.mark.parametrize(("url", "secret"), [
    ("postgresql+psycopg2://ann@db:5432/studies?password=q%40ery&sslmode=require", "q%40ery"),
    ("postgresql+psycopg2://ann:hun@ter2@db:5432/studies", "ter2"),
    ("postgresql+psycopg2://ann:pw/with/slash@db:5432/studies", "slash"),
])
def test_mask_url_hides_query_passwords_and_unencoded_at_signs(url: str, secret: str) -> None:
    from medsweep.storage import mask_secrets

    masked = mask_url(url)
    assert secret not in masked and "db:5432/studies" in masked, masked
    assert secret not in mask_secrets(f"failed for {url} with q@ery", url)


def test_unencoded_at_sign_is_refused_before_connecting() -> None:
    with pytest.raises(StorageError, match="unencoded '@'") as info:
        resolve_storage_url("postgresql://ann:hun@ter2@127.0.0.1:9/db")
    assert "ter2" not in str(info.value)


def test_outage_reports_the_connection_error_not_optunas_commit_guess(tmp_path: Path) -> None:
    """A database that goes away mid-run: the message says what the driver said."""
    from optuna.exceptions import StorageInternalError

    from medsweep.storage import explain_storage_error, is_unreachable
    from medsweep.storage._resilient import ResilientRDBStorage

    from ..workers.conftest import start_private_server

    server = start_private_server()
    try:
        url = server.new_database()
        resilient = open_storage(url, db_down_limit=1)
        plain = open_storage(url)
        assert isinstance(resilient, ResilientRDBStorage)
        study_id = plain.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
        server.pg_ctl("stop", "-m", "fast")
        with pytest.raises(StorageError) as gave_up:
            resilient.set_study_user_attr(study_id, "k", "v")
        with pytest.raises(StorageInternalError) as wrapped:  # what Optuna raises without medsweep
            plain.set_study_user_attr(study_id, "k", "v")
        assert is_unreachable(url, wrapped.value)  # so the CLI prints one line, not a traceback
        explained = str(explain_storage_error(url, wrapped.value, failed="lost storage"))
        for message in (str(gave_up.value), explained):
            assert "invalid data in the commit" not in message and "\n" not in message, message
            assert any(s in message.lower() for s in ("connection", "server closed", "terminating")), message
            assert server.password not in message
    finally:
        try:
            server.pg_ctl("stop", "-m", "immediate")
        except Exception:
            pass
