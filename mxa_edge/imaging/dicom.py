"""DICOM at the point of care: which files of a study are frontal chest radiographs (torch-free).

A folder from the modality or PACS holds whole studies: the PA or AP view, the lateral, maybe a
scout of another body part, a dose report. ``read_header`` reads the identifying tags without
the pixel data; ``skip_reason`` says why a file is not a frontal chest radiograph (or None):

* ``Modality`` must be a projection radiograph: CR, DX (and the non-standard DR some vendors
  write) or RG. CT, MR, US, secondary captures... are skipped. A file without the tag is kept.
* ``BodyPartExamined``, when present, must name the chest (CHEST, THORAX, LUNG and common
  spellings); "HAND" or "ABDOMEN" is skipped. A blank tag is kept: many sites leave it empty.
* ``ViewPosition``: PA and AP are frontal; LL/RL/LATERAL (and decubitus) views are skipped as
  lateral; another value (oblique) is skipped as "not frontal". A blank tag is kept; the input
  guard (``mxa_edge.decision.guard``) is what catches a lateral without the tag.

Multi-frame radiographs are rare (a stitched or repeated exposure): the first frame is used and
the result says so (``frame`` 0 of ``n_frames``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from mxa_edge.support.errors import InputImageError

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})
CHEST_BODY_PART_WORDS = ("CHEST", "THORAX", "THORAC", "TORAX", "LUNG", "PECHO", "THORAKS")
FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LATERAL DECUBITUS"})


@dataclass(frozen=True)
class DicomHeader:
    """The tags predict reports for a DICOM input (strings; "" when the tag is absent)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    body_part: str
    view_position: str
    instance_number: int | None
    n_frames: int
    transfer_syntax: str

    def to_dict(self) -> dict:
        return asdict(self)


def read_header(path) -> DicomHeader:
    """The identifying tags of a DICOM file, without decoding its pixels; InputImageError when
    the file is not readable DICOM."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=path.suffix.lower() in (".dcm", ".dicom"))
    except FileNotFoundError:
        raise InputImageError(path, "file not found; check the path") from None
    except Exception as exc:  # InvalidDicomError, EOFError, struct errors on bad files
        raise InputImageError(
            path, f"unreadable DICOM ({type(exc).__name__}: {exc}); the file is truncated or not DICOM"
        ) from None

    def text(tag: str, upper: bool = False) -> str:
        value = ds.get(tag)
        if value is None:
            return ""
        value = " ".join(str(value).split())
        return value.upper() if upper else value

    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    try:
        instance = int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") not in (None, "") else None
    except (TypeError, ValueError):
        instance = None
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return DicomHeader(
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        modality=text("Modality", upper=True),
        body_part=text("BodyPartExamined", upper=True),
        view_position=text("ViewPosition", upper=True),
        instance_number=instance,
        n_frames=max(n_frames, 1),
        transfer_syntax=(getattr(ts, "name", None) or str(ts)) if ts is not None else "",
    )


def skip_reason(header: DicomHeader) -> str | None:
    """Why this DICOM file is not a frontal chest radiograph, or None when it may be one."""
    if header.modality and header.modality not in RADIOGRAPH_MODALITIES:
        return f"Modality {header.modality} is not a projection radiograph (expected CR or DX)"
    if header.body_part and not any(w in header.body_part for w in CHEST_BODY_PART_WORDS):
        return f"BodyPartExamined {header.body_part} is not the chest"
    view = header.view_position
    if view in LATERAL_VIEWS:
        return f"lateral view (ViewPosition {view}); the model reads frontal PA/AP views"
    if view and view not in FRONTAL_VIEWS:
        return f"ViewPosition {view} is not a frontal PA/AP view"
    return None


def is_dicom_file(path) -> bool:
    """A .dcm/.dicom name, or the 'DICM' magic at byte 128 of a regular file (a FIFO, socket
    or device is never opened: opening a FIFO blocks until something writes to it)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False
