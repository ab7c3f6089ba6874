"""`medsweep report`: a self-contained HTML with every figure, from a real trained study and from
synthetic studies (real Optuna storages, trials added with create_trial/add_trials)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from bench.report import build_synthetic_study
from medsweep.search.report._report import build_report, write_report
from medsweep.search.study._study import load_study
from medsweep.search.cli import main
from medsweep.storage import open_storage
from tests.conftest import POSTGRES_URL
from tests.conftest import _new_postgres_database as new_postgres_database

FIGURE_KEYS = ("history", "importances", "parallel", "slices", "backbones", "curves", "best_curves",
               "confusion", "roc", "reliability")


def _figure_json(text: str, key: str) -> dict:
    """The data of one figure as plotly.to_html embedded it."""
    match = re.search(rf'"figure-{key}",\s*(\[.*?\]),\s*(\{{.*?\}}),\s*\{{"displaylogo"', text, re.S)
    assert match, f"figure {key} not found in the HTML"
    return {"data": json.loads(match.group(1))}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def synthetic_study_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One 25-trial cross-validated study (ten baselines, 19 complete, 5 pruned, 1 failed), built once per storage."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'studies.db'}"
    else:
        if not POSTGRES_URL:
            pytest.skip("no PostgreSQL: set MEDSWEEP_TEST_POSTGRES_URL or run the tests through scripts/with-postgres.sh")
        url = new_postgres_database()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    build_synthetic_study(open_storage(url), "synthetic", 25, seed=1, cross_validated=True)
    return url


def test_report_is_offline_html_with_every_figure(synthetic_study_url: str, tmp_path: Path) -> None:
    output = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(main, ["report", "synthetic", "--storage", synthetic_study_url, "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    # Self-contained: the plotly.js bundle is inlined and nothing is fetched from the network.
    assert "Plotly" in text and len(text) > 3_000_000
    assert not re.search(r"<script[^>]+src=", text)
    assert "cdn.plot.ly/plotly" not in text
    for key in FIGURE_KEYS:
        assert f'id="figure-{key}"' in text, key
    assert "Not drawn" not in text
    # Summary: counts by state, best value with its CV interval, best config, compute spent.
    study, _ = load_study(open_storage(synthetic_study_url), "synthetic")
    trials = study.get_trials()
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert f"{counts[TrialState.COMPLETE]} complete" in text and f"{counts[TrialState.PRUNED]} pruned" in text
    best = study.best_trial
    low, high = best.user_attrs["cv"]["ci95"]
    assert f"{best.value:.4f} (95% CI {low:.4f}–{high:.4f}, 5 folds), trial {best.number}" in text
    assert f"backbone={best.params['backbone']}" in text
    saved = sum(t.user_attrs["config"]["epochs"] - len(t.user_attrs["history"]["loss"])
                for t in trials if t.state == TrialState.PRUNED)
    trained = sum(len(t.user_attrs["history"]["loss"]) for t in trials)
    assert f"{trained} epochs trained, {saved} epochs saved by pruning" in text
    hours = sum(t.duration.total_seconds() for t in trials) / 3600
    assert f"{hours:.2f} trial-hours" in text


def test_report_baseline_table_and_marks(synthetic_study_url: str, tmp_path: Path) -> None:
    study, settings = load_study(open_storage(synthetic_study_url), "synthetic")
    report = build_report(study, settings)
    path = write_report(report, tmp_path / "report.html")
    text = path.read_text()
    table = text.split('<table class="baselines">')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert len(rows) == 11  # ten baselines and the searched best
    searched = max((t for t in study.get_trials() if t.state == TrialState.COMPLETE and "baseline" not in t.user_attrs),
                   key=lambda t: t.value)
    assert f"<td>{searched.number}</td>" in rows[-1] and rows[-1].startswith("<td>searched best")
    first = next(t for t in study.get_trials() if t.number == 0)
    delta = first.value - searched.value
    assert "<td>InceptionV3, lr 1e-04, 20 epochs</td>" in rows[0] and f"<td>{delta:+.4f}</td>" in rows[0]
    history = _figure_json(text, "history")
    stars = [trace for trace in history["data"] if trace.get("name") == "survey baseline"]
    assert len(stars) == 1 and len(stars[0]["text"]) == 10


def test_pruned_trials_are_cut_short_in_the_curves(synthetic_study_url: str) -> None:
    study, settings = load_study(open_storage(synthetic_study_url), "synthetic")
    report = build_report(study, settings)
    curves = next(f for f in report.figures if f.key == "curves").figure
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert pruned
    traces = [t for t in curves.data if t.name == "pruned" and t.xaxis in ("x", None)]
    assert len(traces) == 1
    # One line per pruned trial, as long as the epochs it ran (shorter than it planned), ending in an x.
    segments, length = [], 0
    for x in traces[0].x:
        if x is None:
            segments.append(length)
            length = 0
        else:
            assert x == length + 1  # epochs 1, 2, ... with no gap
            length += 1
    assert sorted(segments) == sorted(len(t.user_attrs["history"]["loss"]) for t in pruned)
    assert any(len(t.user_attrs["history"]["loss"]) < t.user_attrs["config"]["epochs"] for t in pruned)
    ends = [t for t in curves.data if t.name == "pruned here" and t.xaxis in ("x", None)]
    assert sorted(ends[0].x) == sorted(len(t.user_attrs["history"]["loss"]) for t in pruned)


def test_report_of_a_study_without_finished_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    build_synthetic_study(open_storage(url), "empty", 0)
    output = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", "empty", "--storage", url, "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert "no completed trial yet" in text and text.count("Not drawn:") == len(FIGURE_KEYS)


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    build_synthetic_study(open_storage(url), "tiny", 3)
    missing = CliRunner().invoke(main, ["report", "nope", "--storage", url])
    assert missing.exit_code == 1 and "study 'nope' does not exist" in missing.output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = CliRunner().invoke(main, ["report", "tiny", "--storage", url, "-o", str(blocker / "report.html")])
    assert bad.exit_code == 1 and "cannot write the report" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("google-chrome") or shutil.which("chrome")


@pytest.mark.skipif(_chromium() is None, reason="PNG export needs Chrome or Chromium for kaleido (apt-get install chromium)")
def test_png_export_writes_every_figure(synthetic_study_url: str, tmp_path: Path) -> None:
    if not synthetic_study_url.startswith("sqlite"):
        pytest.skip("PNG export does not depend on the storage; run once, on SQLite")
    result = CliRunner().invoke(main, ["report", "synthetic", "--storage", synthetic_study_url, "-o", str(tmp_path / "r.html"),
                                       "--png", str(tmp_path / "figures")])
    assert result.exit_code == 0, result.output
    written = sorted(p.stem for p in (tmp_path / "figures").glob("*.png"))
    assert written == sorted(FIGURE_KEYS)
    for path in (tmp_path / "figures").glob("*.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_png_export_without_a_browser_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    build_synthetic_study(open_storage(url), "tiny", 3)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))  # where kaleido looks first
    result = CliRunner().invoke(main, ["report", "tiny", "--storage", url, "-o", str(tmp_path / "r.html"),
                                       "--png", str(tmp_path / "figures")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "PNG export failed" in result.output and "apt-get install chromium" in result.output
    assert (tmp_path / "r.html").stat().st_size > 3_000_000  # the HTML was written before the PNGs


@pytest.mark.slow
def test_report_of_10000_trials_takes_under_a_minute(tmp_path: Path) -> None:
    """Figures and HTML for 10,000 trials (in memory, so the clock measures the report itself;
    `python -m bench.report` times the same with a database)."""
    from optuna.storages import InMemoryStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = InMemoryStorage()
    build_synthetic_study(storage, "big", 10_000)
    began = time.perf_counter()
    study, settings = load_study(storage, "big")
    report = build_report(study, settings)
    path = write_report(report, tmp_path / "big.html")
    elapsed = time.perf_counter() - began
    assert elapsed < 60, report.timings
    text = path.read_text()
    assert all(f'id="figure-{key}"' in text for key in FIGURE_KEYS)
    assert "showing 150 of" in text and path.stat().st_size < 20_000_000


VGG_SPACE = """\
backbone: VGG19
image_size: 32
weights: none
augmentation: false
learning_rate: {low: 0.0001, high: 0.001, log: true}
epochs: [1, 2]
batch_size: [8]
"""


@pytest.mark.slow
def test_report_of_a_trained_study(tmp_path: Path, image_folder: Path) -> None:
    """Real trials (VGG19, random weights, 32 px): the report draws the best trial's confusion
    matrix and ROC curve from what the worker recorded."""
    from medsweep.search.workers._worker import run_worker

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space = tmp_path / "space.yaml"
    space.write_text(VGG_SPACE)
    runner = CliRunner()
    created = runner.invoke(main, ["create", "trained", "--data", str(image_folder), "--space", str(space),
                                   "--pruner", "none", "--storage", url])
    assert created.exit_code == 0, created.output
    run_worker(open_storage(url), "trained", n_trials=2)
    study, settings = load_study(open_storage(url), "trained")
    best = study.best_trial
    roc = best.user_attrs["roc_curve"]
    assert roc["fpr"][0] == 0 and roc["fpr"][-1] == 1 and roc["tpr"][-1] == 1
    assert sum(map(sum, best.user_attrs["metrics"]["confusion_matrix"])) == best.user_attrs["metrics"]["n"]
    result = runner.invoke(main, ["report", "trained", "--storage", url, "-o", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.html").read_text()
    assert all(f'id="figure-{key}"' in text for key in ("history", "backbones", "curves", "confusion", "roc"))
    confusion = _figure_json(text, "confusion")["data"][0]
    assert confusion["z"] == best.user_attrs["metrics"]["confusion_matrix"]
    assert confusion["x"] == ["abdomen", "chest x-ray"]
    # Only the learning rate and epochs vary, so importances and slices cover those.
    assert "Not drawn: the study searches none" not in text


def test_roc_curve_points_are_thinned_and_binary_only() -> None:
    import numpy as np

    from medsweep.objectives.metrics import roc_curve_points

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 500), 0, 1)
    roc = roc_curve_points(labels, scores[:, None], max_points=50)
    assert len(roc["fpr"]) <= 50 and roc["fpr"][0] == 0 and roc["fpr"][-1] == 1
    assert roc["fpr"] == sorted(roc["fpr"]) and roc["tpr"] == sorted(roc["tpr"])
    assert roc_curve_points([0, 1, 2], np.eye(3)) is None
    assert roc_curve_points([1, 1], np.array([[0.2], [0.9]])) is None
