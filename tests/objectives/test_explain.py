"""Grad-CAM on a real trained medsweep model: a bright square decides the class, so the heatmap
must be higher over the square than elsewhere; plus overlays, example rows and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import DataError
from medsweep.objectives.evaluation import check_images, example_rows, overlay, png_data_uri

SIZE = 48
SQUARE = 14


def _square_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Half the images hold a bright square at a random place (class 1), half do not (class 0)."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(90, 20, (count, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    labels = np.arange(count) % 2
    corners = []
    for index in range(count):
        top, left = (int(v) for v in rng.integers(0, SIZE - SQUARE, 2))
        corners.append((top, left))
        if labels[index]:
            images[index, top:top + SQUARE, left:left + SQUARE] = 250
    return images, labels, corners


@pytest.fixture(scope="module")
def square_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, list]:
    """VGG19 with random, frozen weights (no BatchNorm, so random features stay informative, where a
    random MobileNet's vanish), its head trained 3 epochs (seeded) to tell squares from none."""
    from PIL import Image

    from medsweep.objectives import TrialConfig, train_trial
    from medsweep.objectives.images import TrialData
    from medsweep.objectives.model import save_model

    images, labels, _ = _square_images(96, seed=0)
    config = TrialConfig(backbone="VGG19", image_size=SIZE, weights="none", learning_rate=1e-3, epochs=3,
                         batch_size=8, dropout=0.0, augmentation=False, seed=0)
    data = TrialData(("clear", "square"), images, labels, images[:0], labels[:0])
    result = train_trial(config, data, keep_model=True)
    folder = tmp_path_factory.mktemp("explain")
    path = save_model(result.model, folder / "square.keras", {"class_names": ["clear", "square"]})
    test_images, test_labels, corners = _square_images(12, seed=1)
    for index, pixels in enumerate(test_images):
        Image.fromarray(pixels).save(folder / f"test {index}.png")
    return path, test_images, test_labels, corners


@pytest.mark.slow
def test_heatmap_is_higher_over_the_square_that_decides_the_class(square_model) -> None:
    from medsweep.objectives.evaluation import grad_cam
    from medsweep.objectives.model import load_model

    path, images, labels, corners = square_model
    model, _ = load_model(path)
    explanations = grad_cam(model, images, class_index=1)
    with_square = np.flatnonzero(labels == 1)
    masks = {}
    for index in with_square:
        top, left = corners[index]
        masks[index] = np.zeros((SIZE, SIZE), dtype=bool)
        masks[index][top:top + SQUARE, left:left + SQUARE] = True

    def highlighted(heatmap: np.ndarray, mask: np.ndarray) -> bool:
        peak_inside = mask[np.unravel_index(heatmap.argmax(), heatmap.shape)]
        return bool(peak_inside and heatmap[mask].mean() > 1.5 * heatmap[~mask].mean())

    for index in with_square:
        heatmap = explanations[index].heatmap
        assert heatmap.shape == (SIZE, SIZE)
        assert heatmap.max() > heatmap.min()  # not constant
    found = sum(highlighted(explanations[i].heatmap, masks[i]) for i in with_square)
    assert found >= len(with_square) - 1, f"square highlighted in {found}/{len(with_square)} images"
    # A temperature layer softens the probabilities but leaves the map alone (the logit is explained).
    from medsweep.objectives.model import with_temperature

    softened = grad_cam(with_temperature(model, 2.0), images[with_square], class_index=1)
    for calibrated, index in zip(softened, with_square):
        np.testing.assert_allclose(calibrated.heatmap, explanations[index].heatmap, atol=1e-5)
        assert abs(calibrated.probabilities[1] - 0.5) <= abs(explanations[index].probabilities[1] - 0.5) + 1e-6
    # The same architecture untrained does not pass: the map comes from what training taught.
    from medsweep.objectives import TrialConfig
    from medsweep.objectives.model import build_model

    untrained = build_model(TrialConfig(backbone="VGG19", image_size=SIZE, weights="none", seed=0), 2)
    untrained_maps = grad_cam(untrained, images[with_square], class_index=1)
    assert sum(highlighted(m.heatmap, masks[i]) for m, i in zip(untrained_maps, with_square)) < len(with_square) / 2


@pytest.mark.slow
def test_explain_files_writes_one_overlay_per_image(square_model, tmp_path: Path) -> None:
    from PIL import Image

    from medsweep.objectives.evaluation import explain_files

    path, _, _, _ = square_model
    images = [path.parent / "test 0.png", path.parent / "test 1.png"]
    rows = explain_files(path, images, tmp_path / "overlays")
    assert [Path(r["overlay"]).name for r in rows] == ["test 0.gradcam.png", "test 1.gradcam.png"]
    for row in rows:
        with Image.open(row["overlay"]) as written:
            assert written.size == (SIZE, SIZE) and written.mode == "RGB"
        assert row["class"] in ("clear", "square") and 0.5 <= row["probability"] <= 1
    with pytest.raises(Exception, match="not one of the model's classes"):
        explain_files(path, images, tmp_path / "x", class_name="tumour")


@pytest.mark.slow
def test_example_overlays_fill_the_reports_three_rows(square_model) -> None:
    from medsweep.objectives.evaluation import example_overlays
    from medsweep.objectives.model import load_model

    path, images, labels, _ = square_model
    model, _ = load_model(path)
    rows = example_overlays(model, images, labels, ["clear", "square"], per_row=3)
    assert list(rows) == ["right", "false positives", "false negatives"]
    shown = [item for row in rows.values() for item in row]
    assert shown and all(item["uri"].startswith("data:image/png;base64,") for item in shown)
    assert all(item["true"] == "clear" and item["probability"] >= 0.5 for item in rows["false positives"])
    assert all(item["true"] == "square" and item["probability"] < 0.5 for item in rows["false negatives"])
    assert len(rows["right"]) == 3


def test_missing_and_corrupt_images_are_one_line_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="does not exist"):
        check_images([tmp_path / "nowhere.png"])
    with pytest.raises(DataError, match="cannot be decoded"):
        check_images([broken])


def test_overlay_keeps_the_image_size_and_colours_only_where_the_map_is_high() -> None:
    image = np.full((30, 50, 3), 100, dtype=np.uint8)
    heatmap = np.zeros((10, 10), dtype=np.float32)
    heatmap[:, 5:] = 1.0
    blended = overlay(image, heatmap)
    assert blended.shape == (30, 50, 3)
    assert np.array_equal(blended[:, :10], image[:, :10])  # zero evidence leaves the image alone
    assert not np.array_equal(blended[:, -10:], image[:, -10:])
    assert png_data_uri(blended).startswith("data:image/png;base64,")


def test_example_rows_pick_confident_right_answers_and_both_kinds_of_error() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    positive = np.array([0.1, 0.45, 0.9, 0.95, 0.6, 0.2])
    rows = example_rows(labels, positive, per_row=2)
    assert rows == {"right": [3, 0], "false positives": [2], "false negatives": [5]}


@pytest.mark.slow
def test_explain_and_evaluate_plot_commands(square_model, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from medsweep.search.cli import main

    path, _, _, _ = square_model
    images = [str(path.parent / "test 0.png"), str(path.parent / "test 3.png")]
    result = CliRunner().invoke(main, ["explain", str(path), *images, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 2 and "explains" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test 0.gradcam.png", "test 3.gradcam.png"]
    folder = tmp_path / "eval"
    for name in ("clear", "square"):
        (folder / name).mkdir(parents=True)
    for index in range(6):
        source = path.parent / f"test {index}.png"
        (folder / ("square" if index % 2 else "clear") / source.name).write_bytes(source.read_bytes())
    plot = tmp_path / "reliability.png"
    result = CliRunner().invoke(main, ["evaluate", str(path), "--data", str(folder), "--bootstrap", "0",
                                       "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("warning: the model does not record which images trained it")
    assert "brier" in result.output and "ece" in result.output
    with Image.open(plot) as drawn:
        assert drawn.size == (480, 480)


def test_explain_errors_are_one_line_and_come_before_tensorflow(tmp_path: Path) -> None:
    import subprocess
    import sys

    good = tmp_path / "good.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    script = f"""
import sys
from click.testing import CliRunner
from medsweep.search.cli import main
runner = CliRunner()
for images in ([{str(good)!r}, {str(tmp_path / 'nowhere.png')!r}], [{str(broken)!r}]):
    result = runner.invoke(main, ["explain", {str(tmp_path / 'model.keras')!r}, *images, "-o", {str(tmp_path / 'o')!r}])
    print(result.exit_code, result.output.strip())
result = runner.invoke(main, ["explain", {str(tmp_path / 'model.keras')!r}, {str(good)!r}, "-o", {str(tmp_path / 'o')!r}])
print(result.exit_code, result.output.strip())
print("tensorflow" in sys.modules)
"""
    lines = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[2]).stdout.strip().splitlines()
    assert lines[0].startswith("1 error: image ") and "nowhere.png does not exist" in lines[0]
    assert lines[1].startswith("1 error: image ") and "cannot be decoded" in lines[1]
    assert lines[2].startswith("1 error: model file ") and "does not exist" in lines[2]
    assert lines[3] == "False"
