"""Trial heartbeats, so a trial whose worker died is found and retried: a thread that beats
while a trial runs, and the query that finds running trials whose beats stopped (or never
started: a worker killed between creating a trial and its first beat)."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Iterator

_logger = logging.getLogger("medsweep.storage")


def heartbeat_interval(storage: Any) -> float | None:
    """Seconds between a running trial's beats, or None when the storage keeps no heartbeats."""
    interval = getattr(storage, "heartbeat_interval", None)
    return None if interval is None else float(interval)


def heartbeat_grace(storage: Any) -> float:
    """Seconds without a beat after which a running trial counts as abandoned."""
    interval = heartbeat_interval(storage)
    if interval is None:
        raise ValueError("this storage keeps no heartbeats")
    grace = getattr(storage, "grace_period", None)
    return float(grace) if grace is not None else 2 * interval


def _beat(storage: Any, trial_id: int) -> None:
    try:
        storage.record_heartbeat(trial_id)
    except Exception:  # a missed beat is retried by the next one; the thread must live on
        _logger.debug("heartbeat of trial id %s missed", trial_id, exc_info=True)


@contextmanager
def heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Beat for trial `trial_id` now and every interval until the block ends (no-op without
    heartbeats). The thread is not waited for long on exit: a late beat on a finished trial is
    harmless, a worker stuck behind a database lock is not."""
    interval = heartbeat_interval(storage)
    if interval is None:
        yield
        return
    _beat(storage, trial_id)
    done = threading.Event()

    def run() -> None:
        while not done.wait(interval):
            _beat(storage, trial_id)

    thread = threading.Thread(target=run, name=f"medsweep-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=min(1.0, interval))


def stale_trial_ids(storage: Any, study_id: int) -> list[int]:
    """Running trials of the study whose last beat is older than the grace period, and running
    trials that never beat although they started longer than the grace period ago.

    The one place medsweep reads Optuna's tables itself, because Optuna's public stale check,
    `optuna.storages.fail_stale_trials`, does not suffice for a worker that must lose no trial:
    - it fails a trial first and calls back afterwards, when Optuna refuses every write to the
      (finished) trial, so the trial could not say why it failed (`fail_reason`), and a worker
      killed between the two steps would leave a failed trial that nothing marks for its retry
      (medsweep marks the trial, then fails it through `study.tell`: search/workers/_loop.py);
    - it skips trials that never beat (their worker died between creating the trial and its
      first beat), which would stay RUNNING for ever and hold a place in the trial budget.
    The columns read here are checked against the installed Optuna by
    tests/storage/test_optuna_schema.py, which fails loudly if a release changes them; setup.cfg
    bounds Optuna to the major version tested."""
    import sqlalchemy as sa

    if heartbeat_interval(storage) is None:
        return []
    grace = timedelta(seconds=heartbeat_grace(storage))
    trials = sa.table("trials", sa.column("trial_id"), sa.column("study_id"), sa.column("state"),
                      sa.column("datetime_start"))
    beats = sa.table("trial_heartbeats", sa.column("trial_id"), sa.column("heartbeat"))
    query = (sa.select(trials.c.trial_id, trials.c.datetime_start, beats.c.heartbeat)
             .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
             .where(trials.c.study_id == study_id, trials.c.state == "RUNNING"))

    def read() -> list[int]:
        with storage.engine.connect() as connection:
            # The database's clock, as Optuna stamps beats with it.
            now = _naive(connection.execute(sa.select(sa.func.now())).scalar())
            rows = connection.execute(query).all()
        stale = []
        for trial_id, started, beat in rows:
            if beat is not None:
                if now - _naive(beat) > grace:
                    stale.append(trial_id)
            # No beat ever: Optuna stamps the start with the worker's clock.
            elif started is not None and datetime.now() - _naive(started) > grace:
                stale.append(trial_id)
        return stale

    retry = getattr(storage, "retry", None)
    return retry("stale_trial_ids", read) if retry is not None else read()


def _naive(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite returns CURRENT_TIMESTAMP as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)
