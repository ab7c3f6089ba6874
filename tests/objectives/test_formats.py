"""Images as hospitals store them: DICOM (rescale, VOI window, MONOCHROME1, compressed syntaxes,
one-line errors), TIFF, BMP, WebP and 16-bit PNG, the skip report and the unreadable-share
refusal, decoding settings in the decoded-image and feature caches, and no identifying tag in output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import DataError
from medsweep.objectives.images import DataSpec, ImageDataset, decode_image, scan_image_folder
from medsweep.objectives.images import HIDDEN, NOT_AN_IMAGE, Decoding
from medsweep.objectives.images._formats import MULTI_FRAME, MULTI_PAGE_TIFF, NO_PIXELS, UNSUPPORTED_SYNTAX, check_file, parse_window

from ..dicom_files import BIRTH_DATE, PATIENT_NAME, write_dicom, write_dicom_folder

pydicom = pytest.importorskip("pydicom")

# Hounsfield units along one row: air, fat edge, window bottom, centre, window top, bone.
HU = np.array([-1024, -200, -160, 40, 240, 1500], dtype=np.float64)


def _ct_row(tmp_path: Path, name: str = "ct.dcm", **header) -> Path:
    stored = np.tile(HU + 1024, (6, 1))  # 6 x 6, every row the same
    return write_dicom(tmp_path / name, stored, slope=1.0, intercept=-1024, bits_stored=12, **header)


def test_rescale_then_study_window_gives_the_soft_tissue_view(tmp_path: Path) -> None:
    row = decode_image(_ct_row(tmp_path), 6, Decoding((40, 400)))[0, :, 0]
    assert row[0] == row[1] == row[2] == 0  # at or below center - width/2 = -160 HU: black
    assert abs(int(row[3]) - 128) <= 1  # the centre, 40 HU: mid grey
    assert row[4] == row[5] == 255  # at or above 240 HU: white


def test_header_window_is_used_and_a_study_window_overrides_it(tmp_path: Path) -> None:
    path = _ct_row(tmp_path, window=(-600, 1500))  # a lung window in the header
    header = decode_image(path, 6)[0, :, 0]
    assert 0 < header[1] < header[2] < header[3] < 255 == header[4]  # -1350..150 HU spread over grey levels
    study = decode_image(path, 6, Decoding((40, 400)))[0, :, 0]
    assert list(study[[2, 4]]) == [0, 255] and not np.array_equal(header, study)


def test_no_window_scales_the_image_range(tmp_path: Path) -> None:
    row = decode_image(_ct_row(tmp_path), 6)[0, :, 0].astype(int)
    expected = np.rint((HU - HU.min()) / (HU.max() - HU.min()) * 255)
    assert np.abs(row - expected).max() <= 1


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(0, 4000, 400, dtype=np.float64), (10, 1))
    normal = decode_image(write_dicom(tmp_path / "m2.dcm", pixels, bits_stored=12), 10)
    inverted = decode_image(write_dicom(tmp_path / "m1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1"), 10)
    assert np.abs(normal.astype(int) + inverted.astype(int) - 255).max() <= 1
    assert inverted[0, 0, 0] == 255 and normal[0, 0, 0] == 0  # the lowest stored value is white in MONOCHROME1


def test_dicom_is_found_by_content_without_a_suffix_and_without_a_preamble(tmp_path: Path) -> None:
    pixels = np.arange(64, dtype=np.float64).reshape(8, 8) * 50
    bare = write_dicom(tmp_path / "IM0001", pixels)
    assert check_file(bare) is None
    reference = decode_image(bare, 8)
    no_preamble = write_dicom(tmp_path / "raw.dcm", pixels, preamble=False)
    assert np.array_equal(decode_image(no_preamble, 8), reference)


def test_compressed_syntaxes_decode_like_the_uncompressed_file(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, RLELossless

    pixels = (np.arange(256, dtype=np.float64).reshape(16, 16) * 13) % 4096
    plain = decode_image(write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=12), 16)
    rle = write_dicom(tmp_path / "rle.dcm", pixels, bits_stored=12, transfer_syntax=RLELossless)
    assert pydicom.dcmread(rle).file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(decode_image(rle, 16), plain)
    tried = 1
    if get_decoder(JPEG2000Lossless).is_available:
        try:
            j2k = write_dicom(tmp_path / "j2k.dcm", pixels, bits_stored=12, transfer_syntax=JPEG2000Lossless)
        except (RuntimeError, NotImplementedError):  # no JPEG 2000 encoder installed: decode pydicom's files
            j2k = None
        if j2k is not None:
            assert np.array_equal(decode_image(j2k, 16), plain)
            tried += 1
    # pydicom's bundled MR image, the same pixels stored uncompressed, JPEG-LS and JPEG 2000 lossless.
    reference = decode_image(Path(get_testdata_file("MR_small.dcm")), 32)
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        path = Path(get_testdata_file(name))
        if get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID).is_available:
            assert np.array_equal(decode_image(path, 32), reference), name
            tried += 1
    assert tried >= 2


@pytest.mark.parametrize("case", ["multi-frame", "no pixels", "unsupported"])
def test_unreadable_dicom_is_one_line_naming_file_and_reason(tmp_path: Path, case: str) -> None:
    pixels = np.zeros((8, 8))
    if case == "multi-frame":
        path, reason, hint = write_dicom(tmp_path / "cine.dcm", pixels, frames=3), MULTI_FRAME, "3 frames"
    elif case == "no pixels":
        path, reason, hint = write_dicom(tmp_path / "sr.dcm", pixels, pixel_data=False), NO_PIXELS, "without pixel data"
    else:
        path = write_dicom(tmp_path / "video.dcm", pixels)
        dataset = pydicom.dcmread(path)
        from pydicom.encaps import encapsulate
        from pydicom.uid import MPEG2MPML

        dataset.file_meta.TransferSyntaxUID = MPEG2MPML
        dataset.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
        dataset["PixelData"].VR = "OB"
        dataset.save_as(path, enforce_file_format=True)
        reason, hint = UNSUPPORTED_SYNTAX, "MPEG2"
    problem = check_file(path)
    assert problem is not None and problem.reason == reason and hint in problem.detail
    with pytest.raises(DataError) as raised:
        decode_image(path, 8)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and reason in message
    assert PATIENT_NAME.split("^")[0] not in message


def _sixteen_bit(values: np.ndarray) -> np.ndarray:
    return np.tile(values.astype(np.uint16), (4, 1))


def test_16_bit_png_and_tiff_keep_their_precision_until_scaling(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    values = _sixteen_bit(np.array([1000, 1001, 1002, 1003]))  # four levels an 8-bit read would merge
    Image.fromarray(values).save(tmp_path / "deep.png")
    tifffile.imwrite(tmp_path / "deep.tif", values)
    tifffile.imwrite(tmp_path / "float.tif", values.astype(np.float32) / 7)
    for name in ("deep.png", "deep.tif", "float.tif"):
        row = decode_image(tmp_path / name, 4)[0, :, 0]
        assert list(row) == [0, 85, 170, 255], name
    windowed = decode_image(tmp_path / "deep.tif", 4, Decoding((1001.5, 4)))[0, :, 0]
    assert windowed[0] < windowed[1] < windowed[2] < windowed[3]


def test_tiff_bmp_webp_are_read_and_stray_files_reported(tmp_path: Path) -> None:
    """The reported case: TIFF, BMP and WebP beside JPEGs were skipped without a word."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("a", "b")):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for index in range(4):
            pixels = np.clip(rng.normal(80 + 90 * label, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"j{index}.jpg")
        tifffile.imwrite(folder / "t.tif", pixels)
        Image.fromarray(pixels).save(folder / "b.bmp")
        Image.fromarray(pixels).save(folder / "w.webp", lossless=True)
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "data" / "a" / "notes.txt").write_text("scanner settings")
    files = scan_image_folder(tmp_path / "data")
    assert len(files) == 14
    assert {p.suffix for p in files.paths} == {".jpg", ".tif", ".bmp", ".webp"}
    assert decode_image(tmp_path / "data" / "b" / "w.webp", 20).tolist() == \
        decode_image(tmp_path / "data" / "b" / "b.bmp", 20).tolist()  # lossless: the same pixels
    reasons = sorted(u.reason for u in files.unread)
    assert reasons.count(HIDDEN) == 4 and reasons.count(NOT_AN_IMAGE) == 1
    dataset = ImageDataset.open(DataSpec(str(tmp_path / "data")))
    report = dataset.unread_report()
    assert report is not None and report.startswith("not read: 5 file(s): 1 not an image")
    assert "a/notes.txt" in report and f"4 {HIDDEN}" in report
    assert dataset.fingerprint["unread"] == {HIDDEN: 4, NOT_AN_IMAGE: 1}
    dataset.check_decodable()


def test_mostly_unreadable_folder_is_refused_unless_skip_unreadable(tmp_path: Path) -> None:
    import tifffile

    from ..conftest import write_image_folder

    root = write_image_folder(tmp_path / "data", {"a": 4, "b": 4})
    pixels = np.zeros((6, 6))
    write_dicom(root / "a" / "cine.dcm", pixels, frames=2)
    with tifffile.TiffWriter(root / "b" / "stack.tif") as stack:  # three pages
        for _ in range(3):
            stack.write(np.zeros((6, 6), dtype=np.uint8), photometric="minisblack")
    with pytest.raises(DataError) as raised:
        ImageDataset.open(DataSpec(str(root)))
    message = str(raised.value)
    assert "2 of 10 files" in message and "--skip-unreadable" in message and "\n" not in message
    assert MULTI_FRAME in message and MULTI_PAGE_TIFF in message and "a/cine.dcm" in message
    dataset = ImageDataset.open(DataSpec(str(root), skip_unreadable=True))
    assert dataset.fingerprint["file_count"] == 8
    assert dataset.fingerprint["unread"] == {MULTI_FRAME: 1, MULTI_PAGE_TIFF: 1}


def test_window_option_is_validated_and_round_trips(tmp_path: Path) -> None:
    assert parse_window("40,400") == (40.0, 400.0) and parse_window(" -600, 1500") == (-600.0, 1500.0)
    for bad in ("40", "40,abc", "40,0", "40,-5", "1,2,3"):
        with pytest.raises(DataError, match="window"):
            parse_window(bad)
    spec = DataSpec(str(tmp_path), window="40,400", group_by="PatientID")
    stored = json.loads(json.dumps(spec.to_dict()))
    assert stored["window"] == [40.0, 400.0] and DataSpec.from_dict(stored) == spec
    with pytest.raises(DataError, match="--group-by 'PatientName'"):
        DataSpec(str(tmp_path), group_by="PatientName")


def test_decoded_images_on_disk_are_keyed_on_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSWEEP_MEMORY_LIMIT_MB", "0")  # every decoded array goes to disk
    monkeypatch.setenv("MEDSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    root = write_dicom_folder(tmp_path / "dicom", patients_per_class=3, images_per_patient=2)
    soft = ImageDataset.open(DataSpec(str(root), window=(40, 400))).arrays(16)
    lung = ImageDataset.open(DataSpec(str(root), window=(-600, 1500))).arrays(16)
    assert isinstance(soft.x_train, np.memmap) and isinstance(lung.x_train, np.memmap)
    assert not np.array_equal(np.asarray(soft.x_train), np.asarray(lung.x_train))
    again = ImageDataset.open(DataSpec(str(root), window=(40, 400))).arrays(16)
    assert np.array_equal(np.asarray(again.x_train), np.asarray(soft.x_train))
    names = sorted(p.name for p in (tmp_path / "cache" / "decoded").glob("*-train.npy"))
    assert len(names) == 2 and names[0].split("-")[1] != names[1].split("-")[1]


def test_feature_cache_never_serves_features_of_another_window(tmp_path: Path) -> None:
    from medsweep.objectives import TrialConfig, train_trial
    from medsweep.objectives.images import ArrayCache

    root = write_dicom_folder(tmp_path / "dicom", patients_per_class=3, images_per_patient=2)
    config = TrialConfig(backbone="VGG19", weights="none", image_size=32, augmentation=False, epochs=1,
                         batch_size=4, learning_rate=1e-3, dense_units=8, seed=0)
    cache = tmp_path / "features"
    outcomes = []
    for window in ((40, 400), (-600, 1500), (40, 400)):
        data = ImageDataset.open(DataSpec(str(root), window=window)).arrays(32)
        outcomes.append(train_trial(config, data, feature_cache_dir=cache).feature_cache)
    assert outcomes == ["filled", "filled", "hit"]
    assert len(ArrayCache(cache).entries()) == 2


def test_no_identifying_tag_reaches_the_dataset_description(tmp_path: Path) -> None:
    root = write_dicom_folder(tmp_path / "dicom")
    dataset = ImageDataset.open(DataSpec(str(root), group_by="PatientID", cv=2))
    stored = json.dumps([dataset.fingerprint, dataset.spec.to_dict(), dataset.plan.describe(),
                         dataset.plan.groups.describe(), dataset.unread_report()])
    for secret in (PATIENT_NAME, PATIENT_NAME.split("^")[0], BIRTH_DATE, "PID-0"):
        assert secret not in stored
    assert dataset.plan.groups.tagged_groups == 8


def test_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    pixels = np.tile(np.array([0, 64, 128, 255], dtype=np.float64), (4, 1))
    path = write_dicom(tmp_path / "lut.dcm", pixels, bits_stored=8)
    dataset = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new("LUTData", "US", [255 - value for value in range(256)])  # a LUT that inverts
    dataset.VOILUTSequence = [item]
    dataset.save_as(path, enforce_file_format=True)
    assert list(decode_image(path, 4)[0, :, 0]) == [255, 191, 127, 0]


def test_manifest_rows_naming_unreadable_files_are_reported_like_folders(tmp_path: Path) -> None:
    from medsweep.objectives.images import read_manifest

    root = write_dicom_folder(tmp_path / "dicom", patients_per_class=2, images_per_patient=5)
    write_dicom(root / "cine.dcm", np.zeros((8, 8)), frames=2)
    (root / "notes.txt").write_text("not an image")
    rows = ["path,label,group"] + [f"{p.relative_to(root)},{p.parent.name},{p.name[:6]}"
                                   for p in sorted(root.glob("*/img*"))]
    rows += ["cine.dcm,benign,x", "notes.txt,malignant,y"]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    files, groups = read_manifest(root / "list.csv")
    assert len(files) == 20 and groups is not None and len(groups) == 20
    assert sorted(u.reason for u in files.unread) == [MULTI_FRAME, NOT_AN_IMAGE]
    dataset = ImageDataset.open(DataSpec(str(root), manifest=str(root / "list.csv")))
    assert dataset.unread_report().startswith("not read: 2 file(s)")


def test_reading_an_invalid_header_prints_no_header_value(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import warnings

    from medsweep.objectives.images import dicom_group_ids
    from medsweep.objectives.images._formats import _silence_pydicom

    long_id = "X" * 70 + PATIENT_NAME  # longer than VR LO allows (pydicom 3.0 warns on writing it, not reading)
    path = write_dicom(tmp_path / "odd.dcm", np.zeros((8, 8)), patient_id=long_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        _silence_pydicom()  # what the first DICOM read installs (filters added after simplefilter win)
        assert check_file(path) is None
        decode_image(path, 8)
        [group] = dicom_group_ids([path], "PatientID")
    out, err = capfd.readouterr()
    assert group and PATIENT_NAME not in group
    assert PATIENT_NAME not in out + err
    assert not [w for w in caught if PATIENT_NAME in str(w.message)]
