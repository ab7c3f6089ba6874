"""The storage package's worker interface: heartbeats, the stale-trial query (including a
trial whose worker died before its first beat) and the storage-wide lock, on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
import time

import optuna

from medsweep.storage import heartbeat, heartbeat_grace, open_storage, stale_trial_ids, storage_lock

from .conftest import wait_for


def test_stale_trials_are_the_silent_and_the_never_beating(storage_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A beat each second and 5 s of grace: the beating trial turns stale only if its thread
    # misses four beats in a row, which a loaded machine does not make it do.
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=5)
    assert heartbeat_grace(storage) == 5
    study = optuna.create_study(storage=storage, study_name="beats")
    study_id = storage.get_study_id_from_name("beats")

    def trial_id() -> int:
        return storage.get_trial_id_from_study_id_trial_number(study_id, study.ask().number)

    never, silent, alive = trial_id(), trial_id(), trial_id()
    with heartbeat(storage, silent):
        pass  # one beat, then silence
    with heartbeat(storage, alive):
        assert stale_trial_ids(storage, study_id) == []  # all within the grace period
        # Waited for rather than slept: how soon the grace period is over after those writes
        # depends on how fast this machine made them.
        wait_for(lambda: {never, silent} <= set(stale_trial_ids(storage, study_id)), 60,
                 "the silent and the never-beating trials to turn stale")
        assert sorted(stale_trial_ids(storage, study_id)) == sorted([never, silent])


def test_storage_lock_excludes_other_holders(storage_url: str) -> None:
    storage = open_storage(storage_url)
    inside: list[str] = []
    overlap = threading.Event()

    def hold(name: str) -> None:
        with storage_lock(storage, "budget:x"):
            if inside:
                overlap.set()
            inside.append(name)
            time.sleep(0.3)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(str(i),)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlap.is_set()
