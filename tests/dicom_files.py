"""Small real DICOM files written with pydicom, for the format and workflow tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Identifying values the tests look for in every output: none may ever appear there.
PATIENT_NAME = "Leakwatch^Jacqueline"
BIRTH_DATE = "19230417"


def write_dicom(path: Path, pixels: np.ndarray, *, patient_id: str = "PID-0001", photometric: str = "MONOCHROME2",
                slope: float | None = None, intercept: float | None = None,
                window: tuple[float, float] | None = None, bits_stored: int = 16, signed: bool = False,
                frames: int = 1, pixel_data: bool = True, preamble: bool = True,
                transfer_syntax: str | None = None, study_uid: str | None = None) -> Path:
    """One single-sample image (or `frames` copies of it) with the given header; returns `path`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, patient_id, BIRTH_DATE
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.Modality = "CT"
    if pixel_data:
        array = np.asarray(pixels)
        ds.Rows, ds.Columns = array.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        stored = array.astype(np.int16 if signed else np.uint16)
        if frames > 1:
            ds.NumberOfFrames = frames
            stored = np.stack([stored] * frames)
        ds.PixelData = stored.tobytes()
        if slope is not None or intercept is not None:
            ds.RescaleSlope, ds.RescaleIntercept = slope if slope is not None else 1, intercept or 0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax is not None and pixel_data:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def write_dicom_folder(root: Path, patients_per_class: int = 4, images_per_patient: int = 3, size: int = 24,
                       seed: int = 0) -> Path:
    """Two classes of CT-like DICOM images (HU via rescale), several images per patient, each
    patient's id only in the header (file names carry no id); some MONOCHROME1, some without suffix."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("benign", "malignant")):
        for patient in range(patients_per_class):
            patient_id = f"PID-{label}{patient:03d}"
            for image in range(images_per_patient):
                hounsfield = rng.normal(-100 + 160 * label, 60, (size, size))
                stored = np.clip(hounsfield + 1024, 0, 4095)
                index = patient * images_per_patient + image
                monochrome1 = index % 5 == 4
                file_name = f"img{index:03d}" + ("" if index % 4 == 3 else ".dcm")
                if monochrome1:  # as a CR/DX detector writes it: bright stored values display dark
                    write_dicom(root / name / file_name, 4095 - stored, patient_id=patient_id,
                                photometric="MONOCHROME1", bits_stored=12)
                else:
                    write_dicom(root / name / file_name, stored, patient_id=patient_id, slope=1.0, intercept=-1024,
                                window=(40, 400) if index % 2 else None, bits_stored=12)
    return root
