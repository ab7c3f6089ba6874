"""medsweep's one assumption about Optuna's storage schema, checked against the installed Optuna
on SQLite and PostgreSQL: `medsweep.storage.stale_trial_ids` reads the `trials` and
`trial_heartbeats` tables itself (Optuna's `fail_stale_trials` fails before it can say why and
skips trials that never beat). If a release renames them, this fails with a message saying so,
instead of workers silently never retrying a dead worker's trial."""

from __future__ import annotations

import optuna
import sqlalchemy as sa

from medsweep.storage import open_storage, stale_trial_ids

SCHEMA_HINT = ("Optuna's storage schema changed: medsweep.storage.stale_trial_ids (storage/_heartbeat.py) reads "
               "{table}.{columns}; adapt the query to the installed Optuna {version} or pin Optuna in setup.cfg")


def test_the_tables_and_columns_medsweep_reads_exist(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=2)
    optuna.create_study(storage=storage, study_name="schema")
    inspector = sa.inspect(storage.engine)
    for table, columns in {"trials": {"trial_id", "study_id", "state", "datetime_start"},
                           "trial_heartbeats": {"trial_id", "heartbeat"}}.items():
        present = {column["name"] for column in inspector.get_columns(table)} if inspector.has_table(table) else set()
        assert columns <= present, SCHEMA_HINT.format(table=table, columns=sorted(columns - present),
                                                      version=optuna.__version__)


def test_a_running_trial_is_stored_as_running_with_its_beat(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="states")
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("states"),
                                                                study.ask().number)
    storage.record_heartbeat(trial_id)
    with storage.engine.connect() as connection:
        state = connection.execute(sa.text("SELECT state FROM trials WHERE trial_id = :id"), {"id": trial_id}).scalar()
        beats = connection.execute(sa.text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :id"),
                                   {"id": trial_id}).scalar()
    assert state == "RUNNING", SCHEMA_HINT.format(table="trials", columns="state = 'RUNNING'",
                                                  version=optuna.__version__)
    assert beats == 1, SCHEMA_HINT.format(table="trial_heartbeats", columns="one row per beating trial",
                                          version=optuna.__version__)
    assert stale_trial_ids(storage, storage.get_study_id_from_name("states")) == []  # beating, within the grace
