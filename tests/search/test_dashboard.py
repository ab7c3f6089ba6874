"""`medsweep dashboard` against PostgreSQL: the study, its trials, their per-epoch values, metrics
and notes read back through optuna-dashboard's HTTP API, and the page rendered in headless
Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest

from bench.report import build_synthetic_study
from medsweep.storage import open_storage
from tests.conftest import POSTGRES_URL
from tests.conftest import _new_postgres_database as new_postgres_database

CHROMIUM = os.environ.get("MEDSWEEP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STUDY = "brain mri survey"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, optuna.Study]]:
    """`medsweep dashboard` serving a PostgreSQL database with one 10-trial study; yields its base URL."""
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL: set MEDSWEEP_TEST_POSTGRES_URL or run the tests through scripts/with-postgres.sh")
    postgres_url = new_postgres_database()
    tmp_path = tmp_path_factory.mktemp("dashboard")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = build_synthetic_study(open_storage(postgres_url), STUDY, 10, seed=3, baselines=False)
    from optuna_dashboard import save_note

    save_note(optuna.Trial(study, study.trials[0]._trial_id), "InceptionV3 at the survey's template settings.")
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    env = {**os.environ, "MEDSWEEP_STORAGE": postgres_url}
    server = subprocess.Popen([sys.executable, "-m", "medsweep.search.cli", "dashboard", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[2])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/studies")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the dashboard did not start: " + (tmp_path / "dashboard.log").read_text())
                time.sleep(0.3)
        yield base, study
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.mark.postgres
def test_dashboard_serves_the_study_trials_and_curves(dashboard: tuple[str, optuna.Study]) -> None:
    base, study = dashboard
    summaries = _get(f"{base}/api/studies")["study_summaries"]
    summary = next(s for s in summaries if s["study_name"] == STUDY)
    assert summary["directions"] == ["maximize"]
    detail = _get(f"{base}/api/studies/{summary['study_id']}")
    trials = {t["number"]: t for t in detail["trials"]}
    stored = study.get_trials()
    assert sorted(trials) == [t.number for t in stored]
    for trial in stored:
        served = trials[trial.number]
        assert served["state"] == trial.state.name.capitalize()
        curve = {point["step"]: point["value"] for point in served["intermediate_values"]}
        assert curve == pytest.approx(trial.intermediate_values)
        attrs = {a["key"]: a["value"] for a in served["user_attrs"]}
        assert attrs["baseline" if "baseline" in trial.user_attrs else "config"]
        if "metrics" in trial.user_attrs:
            assert f'"auc": {trial.user_attrs["metrics"]["auc"]!r}' in attrs["metrics"]
    assert "survey's template settings" in trials[0]["note"]["body"]
    assert detail["best_trials"][0]["number"] == study.best_trial.number


def _playwright_or_skip() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium; `make test` does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: pip install -e '.[test]'")
    return sync_playwright


@pytest.mark.postgres
@pytest.mark.slow
def test_dashboard_page_renders_the_study_in_chromium(dashboard: tuple[str, optuna.Study], tmp_path: Path) -> None:
    sync_playwright = _playwright_or_skip()
    base, study = dashboard
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/dashboard", wait_until="domcontentloaded")
            page.get_by_text(STUDY).first.wait_for(timeout=60_000)
            page.get_by_text(STUDY).first.click()
            page.wait_for_url(f"{base}/dashboard/studies/*", timeout=60_000)
            page.get_by_text(STUDY).first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle", timeout=60_000)
            body = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "dashboard.png"))
        finally:
            browser.close()
    assert STUDY in body
    assert (tmp_path / "dashboard.png").read_bytes()[:4] == b"\x89PNG"
