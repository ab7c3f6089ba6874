from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import DataError
from medsweep.objectives.images import DataSpec, ImageDataset, decode_image, scan_image_folder, stratified_split

from ..conftest import write_image_folder


def test_scans_png_jpeg_grayscale_spaces_and_suffixless_files(image_folder: Path) -> None:
    files = scan_image_folder(image_folder)
    assert files.class_names == ("abdomen", "chest x-ray")
    assert len(files) == 24
    names = {p.name for p in files.paths}
    assert any(" " in n for n in names)
    assert any("." not in n for n in names)  # found by content, not by suffix
    assert any(n.endswith(".jpg") for n in names)


def test_decodes_grayscale_to_three_channels_at_any_size(image_folder: Path) -> None:
    path = next(p for p in scan_image_folder(image_folder).paths if p.name.endswith("image 0.png"))
    array = decode_image(path, 48)
    assert array.shape == (48, 48, 3) and array.dtype == np.uint8
    assert np.array_equal(array[..., 0], array[..., 2])  # grayscale repeated


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no class subfolders"),
        (lambda root: write_image_folder(root / "one", {"only": 3}), "only one class"),
    ],
)
def test_bad_folders_give_clear_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError, match=message):
        scan_image_folder(make(tmp_path))


def test_empty_class_folder_is_named(image_folder: Path) -> None:
    (image_folder / "empty class").mkdir()
    with pytest.raises(DataError, match="empty class.*holds no readable image"):
        scan_image_folder(image_folder)


def test_corrupt_image_is_named(image_folder: Path) -> None:
    bad = image_folder / "abdomen" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    dataset = ImageDataset.open(DataSpec(str(image_folder)))
    with pytest.raises(DataError, match="broken.png cannot be decoded"):
        dataset.check_decodable()


def test_file_named_like_image_but_not_one_is_reported(image_folder: Path) -> None:
    (image_folder / "abdomen" / "notes.jpg").write_text("not an image")
    files = scan_image_folder(image_folder)
    assert len(files) == 24
    [unread] = files.unread
    assert unread.path.name == "notes.jpg" and "named like a JPEG file" in unread.detail
    report = ImageDataset.open(DataSpec(str(image_folder))).unread_report()
    assert report == ("not read: 1 file(s): 1 not an image medsweep reads (PNG, JPEG, DICOM, TIFF, BMP, WebP) "
                      "(e.g. abdomen/notes.jpg)")


def test_fingerprint_is_stable_and_sees_content_changes(image_folder: Path) -> None:
    first = ImageDataset.open(DataSpec(str(image_folder))).fingerprint
    assert first == ImageDataset.open(DataSpec(str(image_folder))).fingerprint
    assert first["file_count"] == 24 and first["class_names"] == ["abdomen", "chest x-ray"]
    target = sorted((image_folder / "abdomen").iterdir())[0]
    target.write_bytes(target.read_bytes() + b"\0")
    assert ImageDataset.open(DataSpec(str(image_folder))).fingerprint["content_hash"] != first["content_hash"]


def test_stratified_split_is_seeded_and_keeps_class_balance() -> None:
    labels = [0] * 30 + [1] * 10
    train, val = stratified_split(labels, 0.25, seed=3)
    assert len(val) == 10 and len(set(train) & set(val)) == 0
    assert sum(labels[i] for i in val) == 2 or sum(labels[i] for i in val) == 3
    again = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, stratified_split(labels, 0.25, seed=4)[1])


def test_separate_validation_folder_must_match_classes(tmp_path: Path) -> None:
    train = write_image_folder(tmp_path / "TRAIN", {"a": 4, "b": 4})
    val = write_image_folder(tmp_path / "VAL", {"a": 2, "c": 2})
    with pytest.raises(DataError, match="has classes"):
        ImageDataset.open(DataSpec(str(train), str(val)))


def test_arrays_use_validation_folder(tmp_path: Path) -> None:
    train = write_image_folder(tmp_path / "TRAIN", {"a": 4, "b": 5})
    val = write_image_folder(tmp_path / "VAL", {"a": 2, "b": 3}, seed=1)
    data = ImageDataset.open(DataSpec(str(train), str(val))).arrays(32)
    assert data.x_train.shape == (9, 32, 32, 3) and data.x_val.shape == (5, 32, 32, 3)
    assert list(data.y_val) == [0, 0, 1, 1, 1]


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brain_mri").is_dir(),
                    reason="../shared/data/brain_mri is absent")
def test_both_survey_datasets_load() -> None:
    from ..conftest import SHARED_DATA

    brain = ImageDataset.open(DataSpec(str(SHARED_DATA / "brain_mri")))
    # The original images (the earlier 254-file copy had been re-encoded to grey levels 0-2).
    assert brain.class_names == ("no", "yes") and brain.fingerprint["file_count"] == 253
    assert list(np.bincount(brain.labels)) == [98, 155]
    data = brain.arrays(32)
    assert len(data.x_train) + len(data.x_val) == 253 and data.x_train.shape[1:] == (32, 32, 3)
    open_i = SHARED_DATA / "open_i_abd_vs_cxr"
    template = ImageDataset.open(DataSpec(str(open_i / "TRAIN"), str(open_i / "VAL")))
    assert template.fingerprint["file_count"] == 75
    assert len(template.arrays(32).x_val) == 10
