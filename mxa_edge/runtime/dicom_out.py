"""DICOM outputs of predict: one Structured Report per study, and optional Secondary Captures.

    from mxa_edge.runtime.dicom_out import group_by_study, study_reports, write_datasets

    for study_uid, results in group_by_study(predicted).items():
        write_datasets(study_reports(results, predictor.artifact), "out/sr")

Used by ``mxa-edge predict --sr/--sc`` and by the DICOM node (``mxa-edge serve``).

**Template: TID 1500 Measurement Report in a Comprehensive SR.** Each finding's calibrated
probability is a measurement of the WHOLE image, not of a segmented region, and its decision is a
qualitative evaluation; TID 1500's image-level "Measurement Group" (TID 1501:
``MeasurementsAndQualitativeEvaluations``) holds exactly that, with the source image referenced
per group, and it is the template PACS viewers and AI result consumers parse. A free-form
Comprehensive SR tree would need a bespoke reader. The one spatial result, the deepest MXA
block's region of interest, is a TID 1410 planar ROI group (a closed POLYLINE rectangle on the
source image). The IOD is Comprehensive SR (not Comprehensive 3D SR): everything here is 2D image
coordinates, and Comprehensive SR is the more widely accepted class of the two.

Per image, in the SR's content tree (``Imaging Measurements``):

* one group per finding: finding type = the finding's code; measurements ``Probability``
  (DCM 122157, unit UCUM "1") and ``Threshold Value`` (DCM 122411, unit "1", measurement method =
  the operating-point policy that set it, e.g. ``youden``); qualitative evaluation
  finding = Present (SCT 52101004) / Absent (SCT 272519000): the positive/negative decision;
* one input-guard group (when the artifact has a guard): score and threshold, and
  "in distribution" = Yes (SCT 373066001) / No (SCT 373067005);
* one ROI group with the deepest MXA box, in pixel coordinates of the original image
  (when the model has MXA blocks);
* every group names the algorithm (TID 4019): model id, mxa-edge version, and as parameters the
  artifact's sha256, the drift gate's verdict line and the signature status.

**Codes.** A SNOMED CT code is used only where the DICOM standard itself lists it (PS3.16 context
groups, as shipped in pydicom's code dictionary, which the tests check): Cardiomegaly 287272002
(CID 12248), Edema -> Pulmonary edema 19242006 (CID 3700), Pneumothorax 36118008 (CID 6062),
Pleural Effusion -> Pleural effusion 60046008 (CID 645). The other ten CheXpert findings use the
private coding scheme ``99MXAEDGE`` with the CheXpert name as code meaning: "Fracture" is any
fracture (not the rib fracture code) and "No Finding", "Support Devices", "Lung Opacity",
"Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Other" are CheXpert's own categories; for
Atelectasis, Pneumonia and Consolidation a SNOMED code should replace the private one once checked
against a SNOMED CT release.

**Privacy.** Only the patient and study identifiers (``COPIED_TAGS``) come from the source
headers, which are read again here without pixels: nothing else (institution, device, operator,
descriptions) leaks into the outputs. Every SOP instance, series and the observer device UID is new.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from mxa_edge.support.errors import ConfigError, InputImageError, MissingDependencyError, MxaError

PRIVATE_SCHEME = "99MXAEDGE"
MANUFACTURER = "mxa-edge"
SR_SERIES_NUMBER = 9901  # the series numbers of what predict adds to a study
SC_SERIES_NUMBER = 9902

# The only attributes taken from the source headers (plus the character set they are encoded in).
COPIED_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)

# CheXpert finding -> (scheme, code value, meaning). SCT only where DICOM PS3.16 lists the code.
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "No Finding": (PRIVATE_SCHEME, "NOFINDING", "No Finding"),
    "Enlarged Cardiomediastinum": (PRIVATE_SCHEME, "ENLCARDIOMED", "Enlarged Cardiomediastinum"),
    "Cardiomegaly": ("SCT", "287272002", "Cardiomegaly"),
    "Lung Opacity": (PRIVATE_SCHEME, "LUNGOPACITY", "Lung Opacity"),
    "Lung Lesion": (PRIVATE_SCHEME, "LUNGLESION", "Lung Lesion"),
    "Edema": ("SCT", "19242006", "Pulmonary edema"),
    "Consolidation": (PRIVATE_SCHEME, "CONSOLIDATION", "Consolidation"),
    "Pneumonia": (PRIVATE_SCHEME, "PNEUMONIA", "Pneumonia"),
    "Atelectasis": (PRIVATE_SCHEME, "ATELECTASIS", "Atelectasis"),
    "Pneumothorax": ("SCT", "36118008", "Pneumothorax"),
    "Pleural Effusion": ("SCT", "60046008", "Pleural effusion"),
    "Pleural Other": (PRIVATE_SCHEME, "PLEURALOTHER", "Pleural Other"),
    "Fracture": (PRIVATE_SCHEME, "FRACTURE", "Fracture"),
    "Support Devices": (PRIVATE_SCHEME, "SUPPORTDEVICES", "Support Devices"),
}
GUARD_CODE = (PRIVATE_SCHEME, "INPUTGUARD", "Input guard (frontal chest radiograph like the training images)")
GUARD_SCORE_CODE = (PRIVATE_SCHEME, "GUARDSCORE", "Input guard score (scaled Mahalanobis distance)")
IN_DISTRIBUTION_CODE = (PRIVATE_SCHEME, "INDISTRIBUTION", "In distribution")
ROI_CODE = (PRIVATE_SCHEME, "MXAROI", "MXA region of interest (deepest block)")
POLICY_SCHEME_PREFIX = "operating point: "


def _hd():
    try:
        import highdicom
    except ImportError:
        raise MissingDependencyError(
            "DICOM SR/SC output needs highdicom, which is not installed here: pip install highdicom"
        ) from None
    return highdicom


def _code(triple):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = triple
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def finding_code(label: str):
    """The coded concept of a CheXpert finding (``FINDING_CODES``; private scheme otherwise)."""
    return _code(FINDING_CODES.get(label, (PRIVATE_SCHEME, label.upper().replace(" ", "")[:16], label)))


def _policy_code(policy: str | None):
    """The measurement method of a threshold: the operating-point policy that chose it."""
    text = policy or "unknown"
    return _code((PRIVATE_SCHEME, text.upper()[:16], f"{POLICY_SCHEME_PREFIX}{text}"))


def group_by_study(results) -> dict[str, list]:
    """The predicted DICOM results by StudyInstanceUID, in the order given; results without a
    DICOM header or a study UID are left out (they belong to no study)."""
    studies: dict[str, list] = defaultdict(list)
    for r in results:
        uid = (getattr(r, "dicom", None) or {}).get("study_uid")
        if uid:
            studies[uid].append(r)
    return dict(studies)


def _source_header(result):
    """The source file's header (no pixels), for its UIDs and the identifiers it may give."""
    import pydicom

    try:
        return pydicom.dcmread(result.file, stop_before_pixels=True, force=True)
    except Exception as exc:  # InvalidDicomError, OSError, struct errors: the file changed since predict
        raise InputImageError(result.file, f"cannot re-read its DICOM header for the SR ({exc})") from None


def _evidence(source):
    """A copy of the source header with only its references and ``COPIED_TAGS``: highdicom copies
    the patient and study modules of the evidence it is given, so nothing else may be in it."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    if "SpecificCharacterSet" in source:
        ds.SpecificCharacterSet = source.SpecificCharacterSet
    for tag in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", *COPIED_TAGS):
        setattr(ds, tag, source.get(tag, None))
    return ds


def software_version() -> str:
    from mxa_edge import __version__

    return f"mxa-edge {__version__}"


def _algorithm(artifact):
    hd = _hd()
    manifest = artifact.manifest
    provenance = getattr(artifact, "provenance", None)
    return hd.sr.AlgorithmIdentification(
        name=manifest.model_id,
        version=software_version(),
        parameters=[
            f"artifact_sha256={manifest.artifact_sha256 or 'none'}",
            f"drift gate: {artifact.gate_line()}",
            f"signature: {getattr(provenance, 'status', 'unknown')}",
        ],
        manufacturer=MANUFACTURER,
    )


def _frames(result) -> list[int] | None:
    frame = (result.dicom or {}).get("frame")
    return [int(frame) + 1] if frame is not None else None


def _image_groups(result, source, algorithm, n: int) -> list:
    """The measurement groups of one image: 14 findings, the input guard, the deepest ROI."""
    hd = _hd()
    from pydicom.sr.codedict import codes

    unit = codes.UCUM.NoUnits
    ref = dict(
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=_frames(result),
    )
    groups = []
    for label, probability in result.probabilities.items():
        concept = finding_code(label)
        positive = label in result.positives
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"image {n}: {label}"),
                finding_type=concept,
                algorithm_id=algorithm,
                source_images=[hd.sr.SourceImageForMeasurementGroup(**ref)],
                measurements=[
                    hd.sr.Measurement(name=codes.DCM.Probability, value=float(probability), unit=unit),
                    hd.sr.Measurement(
                        name=codes.DCM.ThresholdValue,
                        value=float(result.thresholds[label]),
                        unit=unit,
                        method=_policy_code(result.policies.get(label)),
                    ),
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=concept, value=codes.SCT.Present if positive else codes.SCT.Absent)
                ],
            )
        )
    if result.in_distribution is not None:
        measurements = []
        if result.ood_score is not None:
            measurements.append(
                hd.sr.Measurement(name=_code(GUARD_SCORE_CODE), value=float(result.ood_score), unit=unit)
            )
        if result.ood_threshold is not None:
            measurements.append(
                hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(result.ood_threshold), unit=unit)
            )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"image {n}: input guard"),
                finding_type=_code(GUARD_CODE),
                algorithm_id=algorithm,
                source_images=[hd.sr.SourceImageForMeasurementGroup(**ref)],
                measurements=measurements,
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(
                        name=_code(IN_DISTRIBUTION_CODE),
                        value=codes.SCT.Yes if result.in_distribution else codes.SCT.No,
                    )
                ],
            )
        )
    if result.roi_boxes:
        x1, y1, x2, y2 = (float(v) for v in result.roi_boxes[-1])
        rectangle = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"image {n}: deepest MXA ROI"),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=rectangle,
                    source_image=hd.sr.SourceImageForRegion(**ref),
                ),
                finding_type=_code(ROI_CODE),
                algorithm_id=algorithm,
            )
        )
    return groups


def _previous_versions(study_uid: str, predecessors) -> list | None:
    """Minimal datasets of the earlier reports this one supersedes: highdicom reads only their
    four UIDs to fill the Predecessor Documents Sequence."""
    from pydicom.dataset import Dataset

    items = []
    for series_uid, sop_class_uid, sop_uid in predecessors or ():
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_uid
        items.append(ds)
    return items or None


def _sr(results, sources, artifact, predecessors=None):
    hd = _hd()
    from pydicom.sr.codedict import codes

    algorithm = _algorithm(artifact)
    groups = []
    for n, (result, source) in enumerate(zip(results, sources), start=1):
        groups.extend(_image_groups(result, source, algorithm, n))
    digest = artifact.manifest.artifact_sha256 or artifact.manifest.model_id
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            # The same device UID for every report of one artifact; nothing from this machine.
            uid=hd.UID.from_uuid(_uuid_of(digest)),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=artifact.manifest.model_id,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ChestImaging,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[_evidence(s) for s in sources],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # an algorithm's output, verified by no one
        is_verified=False,
        previous_versions=_previous_versions(str(sources[0].StudyInstanceUID), predecessors),
    )
    sr.SeriesDescription = f"mxa-edge findings ({artifact.manifest.model_id})"
    sr.SoftwareVersions = software_version()
    return sr


def _uuid_of(text: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mxa-edge:{text}"))


def _secondary_captures(results, sources, artifact) -> list:
    hd = _hd()
    from mxa_edge.runtime.overlay import render_overlay

    series = hd.UID()
    captures = []
    for n, (result, source) in enumerate(zip(results, sources), start=1):
        if result.image is None:
            raise ConfigError(f"{result.file}: no image kept for its secondary capture; predict with keep_image=True")
        rgb = np.asarray(render_overlay(result.image, result).convert("RGB"), dtype=np.uint8)
        ids = {tag: source.get(tag, None) for tag in COPIED_TAGS}
        sc = hd.sc.SCImage(
            pixel_array=rgb,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=ids["StudyInstanceUID"],
            series_instance_uid=series,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=n,
            manufacturer=MANUFACTURER,
            patient_id=ids["PatientID"],
            patient_name=ids["PatientName"],
            patient_birth_date=ids["PatientBirthDate"],
            patient_sex=ids["PatientSex"] or None,
            accession_number=ids["AccessionNumber"],
            study_id=ids["StudyID"],
            study_date=ids["StudyDate"],
            study_time=ids["StudyTime"],
            referring_physician_name=ids["ReferringPhysicianName"],
            # highdicom wants an orientation for the PATIENT system; replaced just below.
            patient_orientation=("L", "F"),
        )
        sc.SeriesDescription = f"mxa-edge overlay ({artifact.manifest.model_id})"
        sc.SoftwareVersions = software_version()
        # The overlay keeps the source's orientation: copy it (PatientOrientation is type 2C in the
        # General Image module, so an unknown one is written empty rather than guessed).
        orientation = source.get("PatientOrientation")
        sc.PatientOrientation = orientation if orientation else None
        if "SpecificCharacterSet" in source:
            sc.SpecificCharacterSet = source.SpecificCharacterSet
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.DerivationDescription = "mxa-edge overlay: MXA ROI boxes, attention map, top findings"
        from pydicom.dataset import Dataset

        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        if _frames(result):
            item.ReferencedFrameNumber = _frames(result)[0]
        sc.SourceImageSequence = [item]
        captures.append(sc)
    return captures


def study_reports(results, artifact, *, secondary_capture: bool = False, predecessors=None) -> list:
    """The DICOM outputs of ONE study's predicted DICOM images: the SR first, then (with
    ``secondary_capture``) one Secondary Capture of each image's overlay, in the source study
    (same StudyInstanceUID, a new series). Each result's ``file`` must still be its DICOM file;
    ``secondary_capture`` needs the results' kept images (``predict_files(keep_image=True)``).
    ``predecessors``: ``(SeriesInstanceUID, SOPClassUID, SOPInstanceUID)`` of earlier SRs of the
    study that this one supersedes (it covers their images and more): listed in the SR's
    Predecessor Documents Sequence, as PS3.3 C.17.2 asks of a report that includes earlier ones."""
    results = list(results)
    if not results:
        raise ConfigError("no predicted DICOM images: a study report needs at least one")
    studies = group_by_study(results)
    if len(studies) != 1 or len(next(iter(studies.values()))) != len(results):
        raise ConfigError(
            f"study_reports takes the DICOM images of ONE study; got {len(studies)} studies "
            f"and {len(results) - sum(map(len, studies.values()))} non-DICOM result(s): use group_by_study first"
        )
    _hd()
    sources = [_source_header(r) for r in results]
    datasets = [_sr(results, sources, artifact, predecessors)]
    if secondary_capture:
        datasets.extend(_secondary_captures(results, sources, artifact))
    return datasets


def write_datasets(datasets, folder) -> list[Path]:
    """Write each dataset as ``FOLDER/<SOPInstanceUID>.dcm`` (a temporary name beside it, then
    renamed: a DICOM node watching the folder never sees half a file); returns the paths."""
    from mxa_edge.support.fileio import atomic_path

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MxaError(f"{folder}: cannot create the DICOM output folder ({exc.strerror or exc})") from None
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        try:
            with atomic_path(path) as tmp:
                ds.save_as(os.fspath(tmp), enforce_file_format=True)
        except OSError as exc:
            raise MxaError(f"{path}: cannot write the DICOM file ({exc.strerror or exc})") from None
        paths.append(path)
    return paths
