"""Leakage-safe splits: planted duplicates, patient groups from file names and manifests, the
locked test split and (repeated) CV folds never let one group straddle train, validation and
test. No training here, so no TensorFlow."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsweep.objectives import DataError
from medsweep.objectives.images import DataSpec, ImageDataset, read_manifest

from ..conftest import write_image_folder


def _plant_duplicates(root: Path, copies_per_class: int = 5) -> dict[str, list[Path]]:
    """Copy some images under new names (twice for the first one), so identical content sits
    in several files; returns each duplicated content's files."""
    planted: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        originals = sorted(p for p in class_dir.iterdir() if p.is_file())[:copies_per_class]
        for index, original in enumerate(originals):
            copies = [class_dir / f"copy {index} of {original.name}"]
            if index == 0:
                copies.append(class_dir / f"second copy of {original.name}")
            for copy in copies:
                shutil.copyfile(original, copy)
            planted[hashlib.sha256(original.read_bytes()).hexdigest()] = [original, *copies]
    return planted


def _groups_of(dataset: ImageDataset, index: np.ndarray) -> set[int]:
    return set(dataset.plan.groups.ids[index].tolist())


def _contents(dataset: ImageDataset, index: np.ndarray) -> set[str]:
    return {hashlib.sha256(dataset.train_files.paths[i].read_bytes()).hexdigest() for i in index}


@pytest.fixture
def folder_with_duplicates(tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    root = write_image_folder(tmp_path / "DUP", {"benign": 20, "malignant": 20}, size=32)
    return root, _plant_duplicates(root)


def test_duplicates_are_found_and_reported(folder_with_duplicates) -> None:
    root, planted = folder_with_duplicates
    dataset = ImageDataset.open(DataSpec(str(root), cv=3))
    report = dataset.plan.groups
    assert report.duplicate_sets == len(planted) == 10
    assert report.duplicate_files == 12  # one extra copy each, two for the first of each class
    assert report.group_count == 40
    assert "12 duplicate file(s) in 10 set(s)" in report.describe()


@pytest.mark.parametrize("spec", [
    {"cv": 5, "repeats": 2, "test_fraction": 0.2},
    {"cv": 3},
    {"test_fraction": 0.25},
    {},
], ids=["cv5x2+test", "cv3", "split+test", "split"])
def test_planted_duplicates_never_straddle_train_validation_and_test(folder_with_duplicates, spec) -> None:
    root, planted = folder_with_duplicates
    dataset = ImageDataset.open(DataSpec(str(root), **spec))
    plan = dataset.plan
    pairs = list(plan.folds) or [plan.validation]
    assert len(pairs) == spec.get("cv", 1) * spec.get("repeats", 1)
    test_contents = _contents(dataset, plan.test)
    for train, val in pairs:
        assert not _contents(dataset, train) & _contents(dataset, val)
        assert not (_contents(dataset, train) | _contents(dataset, val)) & test_contents
        assert len(train) + len(val) == len(plan.development)
    assert len(plan.development) + len(plan.test) == len(dataset.train_files)
    # every planted set lands wholly on one side, in every split
    for files in planted.values():
        indices = [dataset.train_files.paths.index(f) for f in files]
        for train, val in pairs:
            sides = {"train" if i in train else "val" if i in val else "test" for i in indices}
            assert len(sides) == 1


def test_folds_of_one_repeat_partition_the_search_images(folder_with_duplicates) -> None:
    root, _ = folder_with_duplicates
    dataset = ImageDataset.open(DataSpec(str(root), cv=4, repeats=2, test_fraction=0.2))
    plan = dataset.plan
    for repeat in range(2):
        validation = np.concatenate([val for _, val in plan.folds[repeat * 4:(repeat + 1) * 4]])
        assert sorted(validation.tolist()) == sorted(plan.development.tolist())
    first, second = plan.folds[0][1], plan.folds[4][1]
    assert not np.array_equal(first, second)  # a repeat reshuffles
    for _, val in plan.folds:  # stratified: both classes in every validation fold
        assert set(dataset.labels[val].tolist()) == {0, 1}


def test_the_same_spec_gives_the_same_splits_on_another_open(folder_with_duplicates) -> None:
    """A worker on another machine rebuilds the identical locked test split and folds."""
    root, _ = folder_with_duplicates
    spec = DataSpec(str(root), cv=3, repeats=2, test_fraction=0.2, split_seed=7)
    one, two = ImageDataset.open(spec), ImageDataset.open(DataSpec.from_dict(spec.to_dict()))
    assert np.array_equal(one.plan.test, two.plan.test)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(one.plan.folds, two.plan.folds))
    other_seed = ImageDataset.open(DataSpec(str(root), cv=3, repeats=2, test_fraction=0.2, split_seed=8))
    assert not np.array_equal(one.plan.test, other_seed.plan.test)


def test_fold_arrays_hold_the_fold_images(folder_with_duplicates) -> None:
    root, _ = folder_with_duplicates
    dataset = ImageDataset.open(DataSpec(str(root), cv=3, test_fraction=0.2))
    folds = list(dataset.folds(32))
    assert len(folds) == dataset.fold_count == 3
    for data, (train, val) in zip(folds, dataset.plan.folds):
        assert data.x_train.shape == (len(train), 32, 32, 3) and len(data.y_val) == len(val)
        assert np.array_equal(data.y_val, dataset.labels[val])
    x_test, y_test = dataset.test_arrays(32)
    x_all, _ = dataset.all_arrays(32)
    assert len(x_test) == len(dataset.plan.test) and len(x_all) == len(dataset.plan.development)
    assert np.array_equal(y_test, dataset.labels[dataset.plan.test])


def test_patient_ids_from_file_names_keep_each_patient_on_one_side(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "P", {"no": 24, "yes": 24}, size=32)
    for class_dir in root.iterdir():  # three images per patient, patient ids unique per class
        for index, path in enumerate(sorted(class_dir.iterdir())):
            path.rename(class_dir / f"P{class_dir.name}{index // 3:02d}_{index}.png")
    dataset = ImageDataset.open(DataSpec(str(root), cv=4, test_fraction=0.2, group_pattern=r"^P(\w+?)_"))
    assert dataset.plan.groups.group_count == 16
    patient = np.asarray([p.name.split("_")[0] for p in dataset.train_files.paths])
    for train, val in dataset.plan.folds:
        assert not set(patient[train]) & set(patient[val])
        assert not set(patient[train]) & set(patient[dataset.plan.test])


def test_manifest_with_groups_header_and_relative_paths(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "M", {"a": 12, "b c": 12}, size=32)
    rows = ["path,label,group"]
    for class_dir in sorted(root.iterdir()):
        for index, path in enumerate(sorted(class_dir.iterdir())):
            rows.append(f"{path.relative_to(tmp_path).as_posix()},{class_dir.name},{class_dir.name}-{index // 2}")
    manifest = tmp_path / "images.csv"
    manifest.write_text("\n".join(rows) + "\n")
    files, groups = read_manifest(manifest)
    assert files.class_names == ("a", "b c") and len(files) == 24 and groups is not None
    dataset = ImageDataset.open(DataSpec(str(tmp_path), manifest=str(manifest), cv=3))
    assert dataset.plan.groups.group_count == 12
    declared = np.asarray(groups)
    for train, val in dataset.plan.folds:
        assert not set(declared[train]) & set(declared[val])
    # without the group column, identical content still groups
    manifest.write_text("\n".join(r.rsplit(",", 1)[0] for r in rows[1:]))
    files, groups = read_manifest(manifest)
    assert groups is None and len(files) == 24


@pytest.mark.parametrize(("content", "message"), [
    ("", "lists no images"),
    ("x.png\n", "columns"),
    ("missing.png,a\n", "does not exist"),
])
def test_bad_manifests_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content)
    with pytest.raises(DataError, match=message):
        read_manifest(manifest)


@pytest.mark.parametrize(("spec", "message"), [
    ({"cv": 9}, "lower --cv"),
    ({"cv": 1}, "at least 2 folds"),
    ({"repeats": 2}, "needs cross-validation"),
    ({"group_pattern": "(a)(b)"}, "one, around the group id"),
    ({"group_pattern": "(["}, "not a valid regular expression"),
    ({"test_fraction": 0.6}, "between 0 and 0.5"),
])
def test_split_settings_that_cannot_work_are_errors(tmp_path: Path, spec, message: str) -> None:
    root = write_image_folder(tmp_path / "S", {"a": 8, "b": 8}, size=32)
    with pytest.raises(DataError, match=message):
        ImageDataset.open(DataSpec(str(root), **spec))


def test_an_image_in_both_training_and_test_folder_is_refused(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "T", {"a": 8, "b": 8}, size=32)
    test = write_image_folder(tmp_path / "TEST", {"a": 3, "b": 3}, size=32, seed=5)
    leaked = next((root / "a").iterdir())
    shutil.copyfile(leaked, test / "a" / "leaked.png")
    with pytest.raises(DataError, match="leaks"):
        ImageDataset.open(DataSpec(str(root), test_dir=str(test)))


def test_a_separate_test_folder_is_locked_and_search_uses_every_training_image(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "T", {"a": 9, "b": 9}, size=32)
    test = write_image_folder(tmp_path / "TEST", {"a": 3, "b": 2}, size=32, seed=5)
    dataset = ImageDataset.open(DataSpec(str(root), test_dir=str(test), cv=3))
    assert len(dataset.plan.development) == 18 and len(dataset.plan.test) == 0
    x_test, y_test = dataset.test_arrays(32)
    assert x_test.shape == (5, 32, 32, 3) and y_test.tolist() == [0, 0, 0, 1, 1]
    assert dataset.fingerprint["file_count"] == 23


def _patient_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)


@pytest.mark.parametrize("spec", [
    {"cv": 3, "repeats": 2, "test_fraction": 0.25},
    {"validation_fraction": 0.25, "test_fraction": 0.2},
])
def test_dicom_patient_id_keeps_each_patient_in_one_split(tmp_path: Path, spec: dict) -> None:
    """PatientID from the headers (file names carry none) combines with duplicates and a file-name
    pattern: a copied image and a pattern match join two patients into one group."""
    pytest.importorskip("pydicom")
    from ..dicom_files import write_dicom_folder

    root = write_dicom_folder(tmp_path / "dicom", patients_per_class=8, images_per_patient=3)
    first_two = sorted((root / "benign").iterdir())
    shutil.copyfile(first_two[0], root / "benign" / "copy.dcm")  # same content as patient 0's first image
    shutil.copyfile(first_two[4], root / "benign" / "pair_x_a.dcm")  # patient 1
    shutil.copyfile(first_two[7], root / "benign" / "pair_x_b.dcm")  # patient 2, joined to 1 by the pattern
    dataset = ImageDataset.open(DataSpec(str(root), group_by="PatientID", group_pattern=r"^pair_(\w)_", **spec))
    groups = dataset.plan.groups
    assert groups.tag_name == "PatientID" and groups.tagged_groups == 16 and groups.untagged == 0
    assert groups.group_count == 15  # 16 patients, two of them joined by the pattern
    assert "16 distinct PatientID value(s)" in groups.describe()
    patients = [_patient_of(p) for p in dataset.train_files.paths]
    group_of_patient = {}
    for patient, group in zip(patients, groups.ids.tolist()):
        assert group_of_patient.setdefault(patient, group) == group  # one patient, one group
    plan = dataset.plan
    test_patients = {patients[i] for i in plan.test}
    assert test_patients and not test_patients & {patients[i] for i in plan.development}
    for train, val in ([plan.validation] if plan.validation else plan.folds):
        assert not {patients[i] for i in train} & {patients[i] for i in val}
        assert not _groups_of(dataset, train) & _groups_of(dataset, val)


def test_group_by_on_non_dicom_files_counts_them_as_their_own_groups(image_folder: Path) -> None:
    dataset = ImageDataset.open(DataSpec(str(image_folder), group_by="StudyInstanceUID"))
    assert dataset.plan.groups.untagged == 24 and dataset.plan.groups.tagged_groups == 0
    assert "24 file(s) without StudyInstanceUID" in dataset.plan.groups.describe()
