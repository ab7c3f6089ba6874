"""One storage suite over SQLite and a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from storage import StorageError, check_storage, mask_url, open_storage, resolve_storage_url


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
