"""A study on a folder of DICOM files, end to end through the CLI: create (grouped by PatientID,
a CT window, the skip report), worker, export, train --final, predict, evaluate; no patient name,
id or birth date anywhere in what medsweep printed or stored."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from medsweep.objectives.images import HIDDEN, NOT_AN_IMAGE

from ..dicom_files import BIRTH_DATE, PATIENT_NAME, write_dicom_folder
from .test_workflow import WORKFLOW_SPACE, medsweep

pytest.importorskip("pydicom")

SECRETS = (PATIENT_NAME, PATIENT_NAME.split("^")[0], BIRTH_DATE, "PID-0", "PID-1")


def _assert_no_identifiers(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret!r} leaked into {where}"


@pytest.mark.slow
def test_dicom_study_end_to_end_without_identifying_tags(tmp_path: Path) -> None:
    data = write_dicom_folder(tmp_path / "CT", patients_per_class=5, images_per_patient=3)
    (data / "benign" / "README.txt").write_text("exported from PACS")
    (data / "malignant" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    space = tmp_path / "space.yaml"
    space.write_text(WORKFLOW_SPACE.replace("epochs: [1, 2]", "epochs: [1]"))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    outputs: list[str] = []

    created = medsweep("create", "ct", "--data", str(data), "--space", str(space), "--group-by", "PatientID",
                       "--window", "40,400", "--test-fraction", "0.2", storage=storage)
    assert created.returncode == 0, created.stderr
    outputs += [created.stdout, created.stderr]
    assert "30 images" in created.stdout and "10 distinct PatientID value(s)" in created.stdout
    assert "window 40,400" in created.stdout
    assert f"not read: 2 file(s): 1 {NOT_AN_IMAGE} (e.g. benign/README.txt); 1 {HIDDEN}" in created.stdout

    worked = medsweep("worker", "ct", "--n-trials", "2", "--workers", "1", "--quiet", storage=storage, timeout=600)
    assert worked.returncode == 0, worked.stderr
    outputs += [worked.stdout, worked.stderr]

    best = tmp_path / "best.yaml"
    exported = medsweep("export", "ct", "-o", str(best), storage=storage)
    assert exported.returncode == 0, exported.stderr
    outputs += [exported.stdout, exported.stderr]
    document = yaml.safe_load(best.read_text())
    assert document["data"]["window"] == [40.0, 400.0] and document["data"]["group_by"] == "PatientID"
    assert document["data"]["fingerprint"]["decoding"]["window"] == [40.0, 400.0]

    model = tmp_path / "model.keras"
    trained = medsweep("train", str(best), "--final", "--bootstrap", "50", "-o", str(model), timeout=600)
    assert trained.returncode == 0, trained.stderr
    outputs += [trained.stdout, trained.stderr]
    with zipfile.ZipFile(model) as archive:
        metadata = json.loads(archive.read("medsweep.json"))
        model_bytes = b"".join(archive.read(name) for name in archive.namelist())
    assert metadata["fingerprint"]["decoding"]["window"] == [40.0, 400.0]

    images = [sorted((data / "malignant").glob("img*"))[0], sorted((data / "benign").glob("img*"))[0]]
    predicted = medsweep("predict", str(model), *map(str, images))
    assert predicted.returncode == 0, predicted.stderr
    outputs += [predicted.stdout, predicted.stderr]
    assert len(predicted.stdout.strip().splitlines()) == 2

    evaluated = medsweep("evaluate", str(model), "--data", str(data), "--bootstrap", "50")
    assert evaluated.returncode == 0, evaluated.stderr
    outputs += [evaluated.stdout, evaluated.stderr]
    assert "30 images" in evaluated.stdout and "auc" in evaluated.stdout
    assert "note: not read: 2 file(s)" in evaluated.stdout

    reported = medsweep("report", "ct", "-o", str(tmp_path / "report.html"), storage=storage)
    assert reported.returncode == 0, reported.stderr

    for index, text in enumerate(outputs):
        _assert_no_identifiers(text, f"command output {index}")
    _assert_no_identifiers(best.read_bytes(), "the export")
    _assert_no_identifiers(model_bytes, "the model file")
    _assert_no_identifiers((tmp_path / "study.db").read_bytes(), "the study database")
    _assert_no_identifiers((tmp_path / "report.html").read_bytes(), "the report")


def test_create_refuses_a_mostly_unreadable_folder_and_stores_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from medsweep.search.cli import main

    from ..dicom_files import write_dicom

    data = write_dicom_folder(tmp_path / "CT", patients_per_class=2, images_per_patient=2)
    for index in range(2):
        write_dicom(data / "benign" / f"cine{index}.dcm", np.zeros((8, 8)), frames=4)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["create", "ct", "--data", str(data), "--storage", storage]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    [line] = refused.output.strip().splitlines()
    assert line.startswith("error: 2 of 10 files") and "2 multi-frame DICOM (e.g. benign/cine0.dcm, benign/cine1.dcm)" in line
    assert "--skip-unreadable" in line
    bad_window = CliRunner().invoke(main, [*args, "--window", "40"])
    assert bad_window.exit_code == 1 and "error: window '40' is not CENTER,WIDTH" in bad_window.output
    import optuna

    assert optuna.get_all_study_summaries(storage) == []  # nothing stored
    accepted = CliRunner().invoke(main, [*args, "--skip-unreadable", "--group-by", "PatientID"])
    assert accepted.exit_code == 0, accepted.output
    assert "8 images" in accepted.output and "not read: 2 file(s): 2 multi-frame DICOM" in accepted.output
