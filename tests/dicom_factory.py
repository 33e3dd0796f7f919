"""Small synthetic DICOM files for the tests and benchmarks: one writer instead of one per test module.

    from dicom_factory import write_dicom, write_studies

    write_dicom(tmp / "a.dcm", gray, study=uid, series=uid2, instance=1, ViewPosition="PA")
    studies = write_studies(tmp / "in", images, n_studies=50, per_study=2)  # {study UID: [paths]}

Pixels: a gray image in [0, 1] (2-D, or 3-D for a multi-frame file) is stored as 12-bit unsigned
MONOCHROME2 (``round(gray * 4095)``), Explicit VR Little Endian, with a Part-10 file meta header.
Only what a caller names is written: no anatomy, view or identifier by default (``chest`` adds the
CHEST / PA pair), so a test controls exactly which header fields its file has.

Importable from tests (pytest puts ``tests/`` on ``sys.path``) and from a benchmark after
``sys.path.insert(0, str(REPO / "tests"))``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
MODALITY_OF = {CR_STORAGE: "CR", DX_STORAGE: "DX", SC_STORAGE: "OT"}
CHEST_PA = {"BodyPartExamined": "CHEST", "ViewPosition": "PA"}


def write_dicom(
    path: Path,
    gray,
    *,
    study: str | None = None,
    series: str | None = None,
    instance: int | None = None,
    sop_class: str = DX_STORAGE,
    sop_uid: str | None = None,
    chest: bool = False,
    **tags,
) -> Path:
    """Write one DICOM image file of ``gray`` and return ``path``.

    ``study``/``series``/``instance``: StudyInstanceUID, SeriesInstanceUID, InstanceNumber (left out
    when None). ``sop_uid``: a fresh UID when None. Modality follows ``sop_class`` (CR, DX, OT) unless
    ``Modality=`` is given. ``chest``: BodyPartExamined CHEST and ViewPosition PA. Any other keyword is
    a DICOM keyword set as given (``PatientID="X"``, ``ViewPosition="LL"``, ``Modality="CT"``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if study is not None:
        ds.StudyInstanceUID = study
    if series is not None:
        ds.SeriesInstanceUID = series
    if instance is not None:
        ds.InstanceNumber = instance
    ds.Modality = MODALITY_OF.get(sop_class, "OT")
    for keyword, value in {**(CHEST_PA if chest else {}), **tags}.items():
        setattr(ds, keyword, value)
    pixels = np.round(np.asarray(gray) * 4095).astype(np.uint16)
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_study(folder: Path, grays, *, study: str | None = None, **kwargs) -> tuple[str, list[Path]]:
    """One DX chest PA study (one series) of one file per gray image, InstanceNumber 1, 2, ...:
    ``(StudyInstanceUID, paths)``; files ``FOLDER/<study>-<i>.dcm``. ``kwargs`` as ``write_dicom``."""
    from pydicom.uid import generate_uid

    study = study or generate_uid()
    series = kwargs.pop("series", None) or generate_uid()
    kwargs.setdefault("chest", True)
    paths = [
        write_dicom(Path(folder) / f"{study}-{i}.dcm", gray, study=study, series=series, instance=i + 1, **kwargs)
        for i, gray in enumerate(grays)
    ]
    return study, paths


def write_studies(folder: Path, images, n_studies: int, per_study: int, **kwargs) -> dict[str, list[Path]]:
    """``n_studies`` studies of ``per_study`` instances each, the images taken in turn (cycling):
    ``{StudyInstanceUID: paths}`` in the order written."""
    out, k = {}, 0
    for _ in range(n_studies):
        grays = [images[(k + i) % len(images)] for i in range(per_study)]
        k += per_study
        study, paths = write_study(folder, grays, **kwargs)
        out[study] = paths
    return out


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random gray image in [0, 1] (Gaussian-filtered noise): not a radiograph, which the
    input guard flags; predicted all the same."""
    from scipy.ndimage import gaussian_filter

    gray = gaussian_filter(rng.random((size, size)), size / 32)
    return (gray - gray.min()) / (np.ptp(gray) or 1.0)
