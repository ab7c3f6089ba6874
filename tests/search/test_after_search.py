"""After the search (issue 12), wired into the commands: ties in status/export/report, `export
--prefer cheapest`, `train --final --calibrate` writing the model card and the seen-images list,
`evaluate --test` under the measured-once rule, `evaluate` counting seen images, `explain`, and the
report's reliability diagram and Grad-CAM rows, on real training at small sizes."""

from __future__ import annotations

import datetime
import json
import os
import re
import zipfile
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from medsweep.search.cli import main
from medsweep.storage import open_storage

from ..conftest import write_image_folder

CHROMIUM = os.environ.get("MEDSWEEP_CHROMIUM", "/usr/bin/chromium")


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------------------------------------
# Ties on a study whose trials carry fold scores (no training: the t-test is the subject here)


def _fold_trial(folds: list[float], seconds: float) -> optuna.trial.FrozenTrial:
    start = datetime.datetime(2026, 1, 1)
    mean = sum(folds) / len(folds)
    # A FrozenTrial rather than create_trial: the timestamps give each trial its cost in seconds.
    return optuna.trial.FrozenTrial(
        number=0, state=optuna.trial.TrialState.COMPLETE, value=mean, datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=seconds), params={"learning_rate": 0.001},
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)},
        user_attrs={"cv": {"mean": mean, "folds": folds, "ci95": [mean - 0.05, mean + 0.05], "validation_share": 0.2},
                    "metrics": {"auc": mean}},
        system_attrs={}, intermediate_values={}, trial_id=0)


@pytest.fixture
def tied_study(tmp_path: Path, image_folder: Path, tiny_space_file: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    _invoke("create", "ties", "--data", str(image_folder), "--space", str(tiny_space_file), "--cv", "3", "--storage", url)
    study = optuna.load_study(study_name="ties", storage=url)
    for folds, seconds in (([0.90, 0.94, 0.86, 0.92, 0.88], 300),   # 0: the best
                           ([0.89, 0.95, 0.84, 0.90, 0.89], 120),   # 1: within noise, cheapest
                           ([0.91, 0.90, 0.85, 0.93, 0.84], 200),   # 2: within noise
                           ([0.60, 0.66, 0.58, 0.63, 0.61], 10)):   # 3: clearly worse, cheapest of all
        study.add_trial(_fold_trial(folds, seconds))
    return url


def test_ties_are_marked_in_status_export_and_report(tied_study: str, tmp_path: Path) -> None:
    status = _invoke("status", "ties", "--storage", tied_study)
    assert "2 trials within noise of the best (trial 0; corrected resampled t-test" in status
    rows = {line.split()[0]: line for line in status.splitlines() if re.match(r"^\d+ +COMPLETE", line)}
    assert " best " in rows["0"] and "~best p=" in rows["1"] and "~best p=" in rows["2"] and "~best" not in rows["3"]

    best = _invoke("export", "ties", "--storage", tied_study, "-o", str(tmp_path / "best.yaml"))
    assert best.startswith("exported trial 0 ") and "2 trials within noise of the best; exported the best trial" in best
    document = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert set(document["ties"]["within_noise"]) == {1, 2} and document["search"]["within_noise"] == 2

    cheap = _invoke("export", "ties", "--prefer", "cheapest", "--storage", tied_study, "-o", str(tmp_path / "cheap.yaml"))
    assert cheap.startswith("exported trial 1 "), cheap  # trial 3 is cheaper but not within noise
    cheap_document = yaml.safe_load((tmp_path / "cheap.yaml").read_text())
    assert cheap_document["trial"] == 1 and "cheapest" in cheap_document["search"]["selected_how"]
    from medsweep.search._model_card import render_model_card

    assert "retrains trial 1, the cheapest (by wall-clock seconds) of the best trial 0" in render_model_card(
        {"search": {**cheap_document["search"], "selected_trial": 1}})

    _invoke("report", "ties", "--storage", tied_study, "-o", str(tmp_path / "r.html"))
    text = (tmp_path / "r.html").read_text()
    assert "2 trials within noise of the best" in text and "pass <code>--model MODEL.keras</code>" in text


def test_prefer_cheapest_on_a_single_split_study_is_one_line(tmp_path: Path, image_folder: Path,
                                                             tiny_space_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    _invoke("create", "single", "--data", str(image_folder), "--space", str(tiny_space_file), "--storage", url)
    study = optuna.load_study(study_name="single", storage=url)
    study.add_trial(optuna.trial.create_trial(value=0.8, params={}, distributions={}))
    result = CliRunner().invoke(main, ["export", "single", "--prefer", "cheapest", "--storage", url,
                                       "-o", str(tmp_path / "b.yaml")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "error: --prefer cheapest needs ties to choose from, but the study is not cross-validated" in result.output


def test_evaluate_test_needs_a_model_that_names_its_study(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("medsweep.json", json.dumps({"class_names": ["a", "b"], "config": {}}))
    result = CliRunner().invoke(main, ["evaluate", str(model), "--test"])
    assert result.exit_code == 1 and "does not name the study it came from" in result.output
    result = CliRunner().invoke(main, ["train", str(tmp_path / "x.yaml"), "--data", str(tmp_path), "--calibrate"])
    assert result.exit_code != 0 and "--calibrate needs --final" in result.output


# ---------------------------------------------------------------------------------------------
# The whole loop on real training (VGG19's random frozen features, 32 px, a few epochs: enough to
# learn the classes' brightness, so the figures are not those of a constant model)

LEARNING_SPACE = """\
backbone: VGG19
image_size: 32
weights: none
augmentation: false
learning_rate: {low: 0.001, high: 0.01, log: true}
epochs: [3, 5]
batch_size: [8]
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    from medsweep.search.workers._worker import run_worker

    root = tmp_path_factory.mktemp("after")
    data = write_image_folder(root / "data", {"abdomen": 16, "chest x-ray": 16})
    space = root / "space.yaml"
    space.write_text(LEARNING_SPACE)
    url = f"sqlite:///{root / 'studies.db'}"
    _invoke("create", "s", "--data", str(data), "--space", str(space), "--cv", "3", "--test-fraction", "0.25",
            "--pruner", "none", "--storage", url)
    run_worker(open_storage(url), "s", n_trials=3)
    return {"root": root, "data": data, "url": url}


@pytest.mark.slow
def test_trials_record_calibration_and_status_tests_ties(searched: dict) -> None:
    study = optuna.load_study(study_name="s", storage=searched["url"])
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        metrics = trial.user_attrs["metrics"]
        assert 0 <= metrics["brier"] <= 1 and 0 <= metrics["ece"] <= 1
        diagram = trial.user_attrs["reliability"]
        assert sum(diagram["count"]) == 24  # every development image once, pooled over the 3 folds
        assert 0 < trial.user_attrs["cv"]["validation_share"] < 1
    status = _invoke("status", "s", "--storage", searched["url"])
    assert re.search(r"(no other trial is|\d+ trials? (is |are )?)within noise of the best", status), status


@pytest.mark.slow
def test_final_calibrated_model_card_evaluate_test_and_report(searched: dict, tmp_path: Path) -> None:
    from medsweep.objectives.model import read_model_metadata

    url, data = searched["url"], searched["data"]
    export = tmp_path / "best.yaml"
    _invoke("export", "s", "--storage", url, "-o", str(export))
    model = tmp_path / "final.keras"
    out = _invoke("train", str(export), "--final", "--calibrate", "--bootstrap", "50", "-o", str(model))
    # The first fold's 8 validation images are too few to fit a temperature on (issue 18): T stays 1.
    tiny = ("only 8 validation images to fit the temperature on, fewer than the 20 a fit needs")
    assert f"warning: --calibrate kept T = 1 (probabilities unchanged): {tiny}" in out, out
    assert "temperature scaling: not applied (T = 1) on 8 validation images" in out, out
    metadata = read_model_metadata(model)
    calibration = metadata["calibration"]
    assert calibration["validation_images"] == 8 and calibration["temperature"] == 1.0
    assert calibration["skipped"] == tiny
    assert set(calibration["test"]) == {"before", "after"} and calibration["test"]["after"] == calibration["test"]["before"]
    seen = metadata["seen_images"]
    assert len(seen["trained"]) == 16 and len(set(seen["trained"]) & set(seen["selected"])) == 16  # CV: all validated

    card = (tmp_path / "final.card.md").read_text()
    for text in ("## Model details", "## Quantitative analyses", "CLAIM", f"kept T = 1 because {tiny}", "within noise",
                 "abdomen: 16, chest x-ray: 16", "Grad-CAM", "## Warnings"):
        assert text in card, text

    # evaluate --test: train --final already measured it, so the stored figures are shown
    stored = _invoke("evaluate", str(model), "--test", "--storage", url)
    assert stored.startswith("the locked test split of study 's' was already measured") and "auc" in stored
    again = _invoke("evaluate", str(model), "--test", "--remeasure", "--bootstrap", "20", "--storage", url,
                    "--plot", str(tmp_path / "rel.png"))
    first = again.splitlines()[0]
    assert first == "none of the 8 images trained or selected this model (checked by content hash)", again
    assert "locked test split of study 's': 8 images, measured once" in again and (tmp_path / "rel.png").stat().st_size > 1000
    assert read_model_metadata(model)["test"]["note"].startswith("measured by `medsweep evaluate --test`")

    # evaluate on the whole folder: the first line counts the seen images; --exclude-seen keeps the 8 others
    whole = _invoke("evaluate", str(model), "--data", str(data), "--bootstrap", "0")
    assert whole.startswith("warning: 24 of 32 images trained (16) or selected (8) this model"), whole
    rest = _invoke("evaluate", str(model), "--data", str(data), "--bootstrap", "0", "--exclude-seen")
    assert rest.startswith("excluded 24 of 32 images") and "measuring the other 8" in rest.splitlines()[0]

    # a plain `train` on the whole folder records its images: `evaluate --test` then says the test trained it
    plain = tmp_path / "plain.keras"
    _invoke("train", str(export), "--data", str(data), "-o", str(plain))
    leaked = _invoke("evaluate", str(plain), "--test", "--bootstrap", "0", "--storage", url)
    assert leaked.startswith("warning: 8 of 8 images trained (8) or selected (0) this model"), leaked
    refused = CliRunner().invoke(main, ["evaluate", str(plain), "--test", "--remeasure", "--exclude-seen",
                                        "--storage", url])
    assert refused.exit_code == 1 and "error: all 8 locked test images of study 's' trained or selected" in refused.output

    overlays = _invoke("explain", str(model), *[str(p) for p in sorted((data / "abdomen").iterdir())[:2]],
                       "-o", str(tmp_path / "overlays"))
    assert len(list((tmp_path / "overlays").glob("*.gradcam.png"))) == 2, overlays

    html_path = tmp_path / "report.html"
    _invoke("report", "s", "--storage", url, "--model", str(model), "-o", str(html_path))
    text = html_path.read_text()
    assert 'id="figure-reliability"' in text and 'id="examples"' in text
    assert all(f'data-row="{row}"' in text for row in ("right", "false positives", "false negatives"))
    assert text.count('src="data:image/png;base64,') >= 1 and "http://" not in text.split("<body>")[1][:20000]
    _check_in_chromium(html_path)


def _check_in_chromium(html_path: Path) -> None:
    """The report opened offline in a real browser: the reliability figure is drawn by plotly and
    every overlay image decodes."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/ensure-chromium.sh as root (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(("file:", "data:"))
                       else route.continue_())
            page.goto(html_path.as_uri())
            page.wait_for_selector("#figure-reliability .main-svg", timeout=20000)
            points = page.eval_on_selector_all("#figure-reliability .scatterlayer .point", "nodes => nodes.length")
            assert points >= 1
            sizes = page.eval_on_selector_all(".examples img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert sizes and all(size >= 32 for size in sizes), sizes
        finally:
            browser.close()


@pytest.mark.slow
def test_final_ensemble_of_fold_models_is_one_model_measured_once(searched: dict, tmp_path: Path) -> None:
    import numpy as np

    from medsweep.objectives.evaluation import predict_probabilities
    from medsweep.objectives.images import DataSpec, ImageDataset
    from medsweep.objectives.model import load_model, read_model_metadata

    url = searched["url"]
    export = tmp_path / "best.yaml"
    _invoke("export", "s", "--storage", url, "-o", str(export))
    single = _invoke("train", str(export), "--final", "--bootstrap", "0", "-o", str(tmp_path / "single.keras"))
    assert "locked test set, 8 images, measured once" in single
    out = _invoke("train", str(export), "--final", "--ensemble", "3", "--bootstrap", "0", "-o", str(tmp_path / "ens.keras"))
    assert "an ensemble of 3 fold models of this config" in out or "an ensemble of 3 fold models" in out, out
    metadata = read_model_metadata(tmp_path / "ens.keras")
    assert metadata["ensemble"]["members"] == 3 and metadata["trained_images"] == 24
    assert metadata["ensemble"]["fold_sizes"] == [16, 16, 16]  # the study's own three folds
    document = yaml.safe_load(export.read_text())
    assert document["test"]["model"].endswith("single.keras") and document["ensemble_test"]["model"].endswith("ens.keras")
    # the ensemble's output is the mean of its members' outputs
    model, _ = load_model(tmp_path / "ens.keras")
    members = [layer for layer in model.layers if layer.name.startswith("member_")]
    assert len(members) == 3
    dataset = ImageDataset.open(DataSpec.from_dict(document["data"]))
    images, _ = dataset.test_arrays(int(model.input_shape[1]))
    together = predict_probabilities(model, images)
    apart = np.mean([predict_probabilities(member, images) for member in members], axis=0)
    assert np.allclose(together, apart, atol=1e-5)
    # measured once: a second ensemble without --remeasure is refused, the single model's record untouched
    refused = CliRunner().invoke(main, ["train", str(export), "--final", "--ensemble", "3", "-o", str(tmp_path / "e2.keras")])
    assert refused.exit_code == 1 and "already measured by an ensemble" in refused.output
    card = (tmp_path / "ens.card.md").read_text()
    assert "an ensemble of 3 fold models" in card
    # Grad-CAM explains the ensemble (its members' maps averaged)
    overlays = _invoke("explain", str(tmp_path / "ens.keras"), str(dataset.train_files.paths[0]), "-o", str(tmp_path / "cam"))
    assert list((tmp_path / "cam").glob("*.png")), overlays
