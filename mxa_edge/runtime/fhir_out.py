"""FHIR output of predict and serve: one FHIR R4 (4.0.1) Bundle per study, as JSON.

    from mxa_edge.runtime.fhir_out import study_bundle, write_bundle

    write_bundle(study_bundle(results_of_one_study, predictor.artifact), "out/fhir")

Used by ``mxa-edge predict --fhir DIR`` and ``mxa-edge serve --fhir DIR``. The same content as the
DICOM SR (``dicom_out``), for systems that take FHIR rather than DICOM:

* a ``collection`` Bundle (``Bundle.id`` from the study, the artifact and the instances covered:
  the same study predicted again gives the same file; a later round of ``serve`` a new one);
* one ``DiagnosticReport`` (status ``preliminary``: an algorithm's output, verified by no one, as the
  SR's PRELIMINARY flag), category RAD, code LOINC 18748-4 "Diagnostic imaging study", the study as
  ``imagingStudy`` (a logical reference by its DICOM Study Instance UID), the patient as ``subject``
  (a logical reference by PatientID, the only patient data copied), the accession number as
  ``basedOn``, ``result`` = every Observation below, and a one-line ``conclusion``;
* per image and finding one ``Observation``: code = the finding (SNOMED CT where the SR uses it,
  else the private system ``urn:mxa-edge:finding``), ``valueQuantity`` = the calibrated probability
  (UCUM "1"), ``interpretation`` POS/NEG = the decision, ``method`` = the operating-point policy, a
  component "Threshold Value" (DCM 122411) and a component "Source of Measurement" (DCM 121112) with
  the source image's SOP Instance UID;
* per image one input-guard Observation: ``valueBoolean`` = in distribution, components for its
  score and threshold (absent for an artifact without a guard);
* one ``Device``: the model id, the mxa-edge version, the artifact's sha256 (identifier and version),
  the drift gate's verdict and the signature status (notes); every Observation names it as ``device``.

Why plain JSON and not a FHIR library: ``fhir.resources`` serves FHIR R4 (4.0.1) only in releases
6.0-6.1, which need pydantic 1 (this environment has pydantic 2); its 7.x/8.x releases are R5 with
an R4B (4.3.0) subpackage. So the R4 resources are written here as dicts, and the tests validate them
with ``fhir.resources.R4B`` (8.x) where installed: DiagnosticReport, Observation, Device and Bundle
have the same R4 and R4B elements for everything used here. No dependency at run time.

IDs are UUID v5 of the study, the artifact digest and what each resource describes, and every
reference inside the Bundle is its ``urn:uuid:`` fullUrl. The DiagnosticReport's id depends on the
study and the artifact only: the report of a later ``serve`` round (a late instance) is a new
version of the same resource, to be stored as an update of the first.
Torch-free: the standard library and pydicom (to read the study's identifiers, no pixels).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from mxa_edge.runtime.dicom_out import FINDING_CODES, MANUFACTURER, group_by_study, software_version
from mxa_edge.support.errors import ConfigError, InputImageError, MxaError
from mxa_edge.support.fileio import atomic_path

FHIR_VERSION = "4.0.1"  # R4
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
PRIVATE_FINDING = "urn:mxa-edge:finding"
PRIVATE_POLICY = "urn:mxa-edge:operating-point"
ARTIFACT_SHA256 = "urn:mxa-edge:artifact-sha256"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
GUARD_CODE = {"system": PRIVATE_FINDING, "code": "INPUTGUARD", "display": "Input guard: in distribution"}
GUARD_SCORE_CODE = {
    "system": PRIVATE_FINDING,
    "code": "GUARDSCORE",
    "display": "Input guard score (scaled Mahalanobis distance)",
}
THRESHOLD_CODE = {"system": DCM, "code": "122411", "display": "Threshold Value"}
SOURCE_CODE = {"system": DCM, "code": "121112", "display": "Source of Measurement"}
UNIT_ONE = {"unit": "1", "system": UCUM, "code": "1"}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mxa-edge:fhir:" + chr(0).join(parts)))


def _finding_coding(label: str) -> dict:

    scheme, value, meaning = FINDING_CODES.get(label, ("", label.upper().replace(" ", ""), label))
    return {"system": SCT if scheme == "SCT" else PRIVATE_FINDING, "code": value, "display": meaning}


def _header(result) -> dict:
    """The study identifiers of the result's source file (read again, without pixels)."""
    import pydicom

    try:
        ds = pydicom.dcmread(result.file, stop_before_pixels=True, force=True)
    except Exception as exc:  # the file changed since it was predicted
        raise InputImageError(result.file, f"cannot re-read its DICOM header for FHIR ({exc})") from None
    return {k: str(ds.get(k, "") or "") for k in ("PatientID", "AccessionNumber", "StudyDate")}


def _date(dicom_date: str) -> str | None:
    """A DICOM DA (YYYYMMDD) as a FHIR date; a time is left out (FHIR wants its zone, DICOM rarely has it)."""
    d = dicom_date.strip()
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else None


def _quantity(value: float) -> dict:
    return {"value": float(value), **UNIT_ONE}


def _device(artifact, device_id: str) -> dict:

    manifest = artifact.manifest
    digest = manifest.artifact_sha256 or "none"
    provenance = getattr(artifact, "provenance", None)
    return {
        "resourceType": "Device",
        "id": device_id,
        "identifier": [{"system": ARTIFACT_SHA256, "value": digest}],
        "manufacturer": MANUFACTURER,
        "deviceName": [{"name": manifest.model_id, "type": "model-name"}],
        "version": [
            {"type": {"text": "software"}, "value": software_version()},
            {"type": {"text": "artifact_sha256"}, "value": digest},
        ],
        "note": [
            {"text": f"drift gate: {artifact.gate_line()}"},
            {"text": f"signature: {getattr(provenance, 'status', 'unknown')}"},
        ],
    }


def _observation(obs_id: str, code: dict, text: str, common: dict, sop: str, **fields) -> dict:
    components = fields.pop("_components", [])
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [code], "text": text},
        **common,
        **fields,
        "component": [
            *components,
            {"code": {"coding": [SOURCE_CODE]}, "valueString": sop},
        ],
    }


def study_bundle(results, artifact) -> dict:
    """The FHIR R4 Bundle (a dict, ready for ``json.dumps``) of ONE study's predicted DICOM images."""

    results = list(results)
    studies = group_by_study(results)
    if len(studies) != 1 or len(next(iter(studies.values()))) != len(results):
        raise ConfigError(f"study_bundle takes the DICOM images of ONE study; got {len(studies)} studies")
    study = next(iter(studies))
    header = _header(results[0])
    digest = artifact.manifest.artifact_sha256 or artifact.manifest.model_id
    sops = [str(r.dicom.get("sop_uid") or Path(r.file).stem) for r in results]
    device_id = _uuid("device", digest)
    report_id = _uuid("report", study, digest)
    bundle_id = _uuid("bundle", study, digest, *sorted(sops))
    subject = {"subject": {"identifier": {"value": header["PatientID"]}}} if header["PatientID"] else {}
    common = {**subject, "device": {"reference": f"urn:uuid:{device_id}"}}
    observations, lines = [], []
    for n, (result, sop) in enumerate(zip(results, sops), start=1):
        frame = str((result.dicom or {}).get("frame"))
        for label, probability in result.probabilities.items():
            positive = label in result.positives
            policy = result.policies.get(label) or "unknown"
            observations.append(
                _observation(
                    _uuid("finding", study, digest, sop, frame, label),
                    _finding_coding(label),
                    label,
                    common,
                    sop,
                    valueQuantity=_quantity(probability),
                    interpretation=[
                        {
                            "coding": [
                                {
                                    "system": INTERPRETATION,
                                    "code": "POS" if positive else "NEG",
                                    "display": "Positive" if positive else "Negative",
                                }
                            ]
                        }
                    ],
                    method={
                        "coding": [{"system": PRIVATE_POLICY, "code": policy}],
                        "text": f"operating point: {policy}",
                    },
                    _components=[
                        {"code": {"coding": [THRESHOLD_CODE]}, "valueQuantity": _quantity(result.thresholds[label])}
                    ],
                )
            )
        if result.in_distribution is not None:
            components = []
            if result.ood_score is not None:
                components.append(
                    {"code": {"coding": [GUARD_SCORE_CODE]}, "valueQuantity": _quantity(result.ood_score)}
                )
            if result.ood_threshold is not None:
                components.append(
                    {"code": {"coding": [THRESHOLD_CODE]}, "valueQuantity": _quantity(result.ood_threshold)}
                )
            observations.append(
                _observation(
                    _uuid("guard", study, digest, sop, frame),
                    GUARD_CODE,
                    "Input guard: frontal chest radiograph like the training images",
                    common,
                    sop,
                    valueBoolean=bool(result.in_distribution),
                    _components=components,
                )
            )
        flag = "" if result.in_distribution is not False else " (flagged by the input guard: not reliable)"
        lines.append(f"image {n}: " + (", ".join(result.positives) or "no finding above its threshold") + flag)
    report = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": "preliminary",
        "category": [{"coding": [{"system": DIAGNOSTIC_SERVICE, "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": f"mxa-edge chest radiograph findings ({artifact.manifest.model_id})",
        },
        **subject,
        **({"effectiveDateTime": _date(header["StudyDate"])} if _date(header["StudyDate"]) else {}),
        "imagingStudy": [{"type": "ImagingStudy", "identifier": {"system": DICOM_UID, "value": f"urn:oid:{study}"}}],
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        "conclusion": "; ".join(lines),
    }
    if header["AccessionNumber"]:
        report["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {
                    "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "ACSN"}]},
                    "value": header["AccessionNumber"],
                },
            }
        ]
    resources = [report, *observations, _device(artifact, device_id)]
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def bundle_bytes(bundle: dict) -> bytes:
    return (json.dumps(bundle, indent=2, allow_nan=False) + "\n").encode()


def write_bundle(bundle: dict, folder) -> Path:
    """``FOLDER/<Bundle.id>.json`` (a temporary name beside it, then renamed); returns the path."""

    folder = Path(folder)
    path = folder / f"{bundle['id']}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(bundle_bytes(bundle))
    except OSError as exc:
        raise MxaError(f"{path}: cannot write the FHIR bundle ({exc.strerror or exc})") from None
    return path
