"""predict --sr / --sc: a TID 1500 Structured Report per study and overlay Secondary Captures.

A real (quick) ONNX export, phantom DICOM CR files of one study written with pydicom, the real CLI
in a subprocess; the SR is read back with pydicom and highdicom and checked against predict's
own --json output, for privacy (only patient and study identifiers copied), for new UIDs and
for references to the source instances; DCMTK's dsrdump reads it where DCMTK is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
hd = pytest.importorskip("highdicom")

import pydicom  # noqa: E402

CLI = [sys.executable, "-m", "mxa_edge_cli.app"]
STUDY = "1.2.826.0.1.3680043.8.498.4242.1"
SERIES = "1.2.826.0.1.3680043.8.498.4242.1.1"
IDENTIFIERS = dict(
    PatientID="MXA-TEST-0042",
    PatientName="Doe^Jane",
    PatientBirthDate="19700101",
    PatientSex="F",
    StudyID="S42",
    AccessionNumber="ACC4242",
    StudyDate="20261207",
    StudyTime="101500",
    ReferringPhysicianName="House^Gregory",
)
# Source tags that must never reach the outputs.
SECRETS = dict(
    InstitutionName="Secret General Hospital",
    StationName="SECRETSTATION",
    OperatorsName="Secret^Operator",
    Manufacturer="SecretVendor",
    StudyDescription="SECRET STUDY DESCRIPTION",
    PatientComments="secret patient comment",
)


def _dicom(path: Path, gray: np.ndarray, instance: int) -> Path:
    from dicom_factory import CR_STORAGE, write_dicom

    return write_dicom(
        path,
        gray,
        study=STUDY,
        series=SERIES,
        instance=instance,
        sop_class=CR_STORAGE,
        chest=True,
        PatientOrientation=["L", "F"],
        **IDENTIFIERS,
        **SECRETS,
    )


@pytest.fixture(scope="module")
def study(small_onnx_artifact, tmp_path_factory):
    """(artifact, three phantom CR files of one study, a PNG, the CLI's JSON records, SR dir, SC dir)."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("dicom-sr")
    run, art = small_onnx_artifact
    pngs = sorted((run.parent / "data").rglob("valid/*/*/view1_frontal.jpg"))[:4]  # phantom frontal views
    files = []
    for k, png in enumerate(pngs[:3], start=1):
        gray = np.asarray(Image.open(png).convert("L"), dtype=np.float32) / 255.0
        files.append(_dicom(tmp / f"img{k}.dcm", gray, k))
    sr_dir, sc_dir = tmp / "sr", tmp / "sc"  # and --fhir into tmp / "fhir" (_fhir_dir)
    args = [*files, pngs[3], "--model", art, "--json", "--sr", sr_dir, "--sc", sc_dir, "--fhir", tmp / "fhir"]
    proc = subprocess.run(CLI + ["predict", *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    return art, files, pngs[3], records, sr_dir, sc_dir, proc.stderr


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _all_values(ds) -> str:
    """Every element's value, nested sequences included, as one string to search."""
    out = []

    def visit(d):
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    visit(item)
            elif elem.tag != 0x7FE00010:
                out.append(str(elem.value))

    visit(ds)
    return "\n".join(out)


def test_one_sr_per_study_matches_the_json(study):
    art, files, png, records, sr_dir, sc_dir, stderr = study
    by_file = {r["file"]: r for r in records}
    dicom_records = [by_file[str(f)] for f in files]
    assert all(r["status"] == "predicted" for r in dicom_records)
    srs = sorted(sr_dir.glob("*.dcm"))
    assert len(srs) == 1, "one SR for the one study"
    assert {r["sr"] for r in dicom_records} == {str(srs[0])}
    assert "sr" not in by_file[str(png)] and "sc" not in by_file[str(png)]
    assert not list(sr_dir.glob(".*")), "no temporary file left behind"

    sr = hd.sr.srread(srs[0])
    assert srs[0].stem == sr.SOPInstanceUID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.Modality == "SR" and sr.SoftwareVersions.startswith("mxa-edge ")
    report = sr.content  # highdicom parses TID 1500 on reading
    assert isinstance(report, hd.sr.MeasurementReport)
    by_sop = {r["dicom"]["sop_uid"]: r for r in dicom_records}
    seen = {sop: {} for sop in by_sop}
    guard = {}
    for group in report.get_image_measurement_groups():
        (source,) = group.source_images
        sop = source.referenced_sop_instance_uid
        assert sop in by_sop, "every group references a source instance"
        finding = group.finding_type
        measurements = {m.name.value: m for m in group.get_measurements()}
        (evaluation,) = group.get_qualitative_evaluations()
        if finding.scheme_designator == "99MXAEDGE" and finding.value == "INPUTGUARD":
            guard[sop] = (measurements, evaluation)
            continue
        seen[sop][finding.meaning] = (measurements, evaluation, finding)

    from mxa_edge.runtime.dicom_out import finding_code

    for sop, record in by_sop.items():
        labels = {finding_code(label).meaning: label for label in record["findings"]}
        assert set(seen[sop]) == set(labels), "all 14 findings of every image"
        for meaning, (measurements, evaluation, finding) in seen[sop].items():
            expected = record["findings"][labels[meaning]]
            assert measurements["122157"].value == pytest.approx(expected["probability"], abs=1e-12)
            assert measurements["122411"].value == pytest.approx(expected["threshold"], abs=1e-12)
            assert measurements["122411"].method.meaning == f"operating point: {expected['policy']}"
            assert measurements["122157"].unit.value == "1"
            assert evaluation.name == finding
            assert evaluation.value.value == ("52101004" if expected["positive"] else "272519000")
        if record["in_distribution"] is not None:
            measurements, evaluation = guard[sop]
            assert evaluation.value.value == ("373066001" if record["in_distribution"] else "373067005")
            assert measurements["GUARDSCORE"].value == pytest.approx(record["ood_score"], abs=1e-9)

    rois = report.get_planar_roi_measurement_groups()
    with_boxes = [r for r in dicom_records if r["roi_boxes"]]
    assert len(rois) == len(with_boxes)
    for roi in rois:
        region = roi.roi
        (source,) = region.ContentSequence  # "selected from" the source image
        record = by_sop[source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID]
        x1, y1, x2, y2 = record["roi_boxes"][-1]
        expected = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])
        assert region.GraphicType == "POLYLINE"
        np.testing.assert_allclose(region.value, expected, rtol=1e-5, atol=1e-3)

    algorithm = [
        item
        for item in _walk(sr.ContentSequence)
        if item.ConceptNameCodeSequence[0].CodeValue == "111001"  # Algorithm Name
    ]
    assert algorithm and {item.TextValue for item in algorithm} == {records[0]["model_id"]}
    text = _all_values(sr)
    assert f"artifact_sha256={json.loads((art / 'manifest.json').read_text())['artifact_sha256']}" in text
    assert "drift gate: passed" in text and "signature: " in text


def test_sr_copies_identifiers_only_and_references_the_sources(study):
    _, files, _, _, sr_dir, _, _ = study
    (path,) = sr_dir.glob("*.dcm")
    sr = pydicom.dcmread(path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for keyword, value in IDENTIFIERS.items():
        assert str(sr[keyword].value) == value
    assert sr.StudyInstanceUID == STUDY
    text = _all_values(sr)
    for keyword, secret in SECRETS.items():
        assert secret not in text, f"{keyword} of the source leaked into the SR"
    # Copied on purpose, or the SR's own value that may equal the source's by chance.
    allowed = {*IDENTIFIERS, "StudyInstanceUID", "SpecificCharacterSet", "SOPClassUID", "InstanceNumber"}
    for elem in sources[0]:
        if elem.keyword in allowed or elem.keyword not in sr or elem.VR == "SQ" or elem.value in (None, ""):
            continue
        assert sr[elem.keyword].value != elem.value, f"{elem.keyword} copied from the source"
    source_uids = {s.SOPInstanceUID for s in sources} | {s.SeriesInstanceUID for s in sources}
    assert sr.SOPInstanceUID not in source_uids and sr.SeriesInstanceUID not in source_uids
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == STUDY
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in evidence.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert referenced == {s.SOPInstanceUID for s in sources}


def test_non_dicom_inputs_get_a_note_and_no_sr(study, tmp_path):
    art, png = study[0], study[2]
    out = tmp_path / "sr"
    proc = subprocess.run(
        CLI + ["predict", str(png), "--model", str(art), "--sr", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 predicted input(s) are not DICOM images of a study: no SR/SC for them" in proc.stderr
    assert not list(out.glob("*"))


def test_dsrdump_reads_the_sr(study):
    (path,) = study[4].glob("*.dcm")
    dsrdump = shutil.which("dsrdump")
    if dsrdump is None:
        pytest.skip("DCMTK's dsrdump is not installed here: the SR is checked with pydicom and highdicom only")
    proc = subprocess.run([dsrdump, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Error" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "Imaging Measurement Report" in proc.stdout


def test_secondary_captures_are_rgb_overlays_in_the_source_study(study):
    _, files, _, records, _, sc_dir, _ = study
    by_file = {r["file"]: r for r in records}
    scs = sorted(sc_dir.glob("*.dcm"))
    assert len(scs) == len(files)
    assert {by_file[str(f)]["sc"] for f in files} == {str(p) for p in scs}
    series = set()
    source_sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    for path in scs:
        sc = pydicom.dcmread(path)
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        assert sc.StudyInstanceUID == STUDY and sc.SeriesInstanceUID != SERIES
        assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
        assert sc.pixel_array.ndim == 3 and sc.pixel_array.shape[2] == 3
        assert sc.PatientID == IDENTIFIERS["PatientID"]
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in source_sops
        text = _all_values(sc)
        assert not any(secret in text for secret in SECRETS.values())
        series.add(sc.SeriesInstanceUID)
    assert len(series) == 1, "one new series for the study's captures"


def test_snomed_codes_are_the_dicom_standards():
    """Every SCT code used is listed in DICOM PS3.16 (pydicom's code dictionary) with that meaning."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from mxa_edge.runtime.dicom_out import FINDING_CODES

    standard = {}
    for name in codes.SCT.dir():
        code = getattr(codes.SCT, name)
        if isinstance(code, Code):
            standard.setdefault(code.value, set()).add(code.meaning.lower())
    used = [(value, meaning) for scheme, value, meaning in FINDING_CODES.values() if scheme == "SCT"]
    assert used
    for value, meaning in used:
        assert meaning.lower() in standard.get(value, set()), f"SCT {value} {meaning!r} is not in DICOM PS3.16"


def test_study_reports_takes_one_study():
    from types import SimpleNamespace

    from mxa_edge.runtime.dicom_out import group_by_study, study_reports
    from mxa_edge.support.errors import ConfigError

    a = SimpleNamespace(dicom={"study_uid": "1.2.3"})
    b = SimpleNamespace(dicom={"study_uid": "1.2.4"})
    c = SimpleNamespace(dicom=None)
    assert group_by_study([a, b, c, a]) == {"1.2.3": [a, a], "1.2.4": [b]}
    with pytest.raises(ConfigError, match="ONE study"):
        study_reports([a, b], artifact=None)
    with pytest.raises(ConfigError, match="ONE study"):
        study_reports([a, c], artifact=None)


def _fhir_dir(study) -> Path:
    return study[4].parent / "fhir"


def test_fhir_bundle_says_what_the_json_says(study):
    """predict --fhir on the same run as --json: one R4 Bundle for the study whose DiagnosticReport,
    Observations and Device carry every image's findings (probability, threshold, decision, policy),
    the input guard's verdict and the model's identity; references resolve inside the Bundle; only
    the patient and study identifiers come from the source. Validated with fhir.resources (R4B models,
    the same elements as R4 for these resources) where installed."""
    art, files, png, records, _, _, _ = study
    by_file = {r["file"]: r for r in records}
    (path,) = _fhir_dir(study).glob("*.json")
    assert {by_file[str(f)]["fhir"] for f in files} == {str(path)} and "fhir" not in by_file[str(png)]
    text = path.read_text()
    bundle = json.loads(text)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection" and path.stem == bundle["id"]
    resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    assert all(url == f"urn:uuid:{r['id']}" for url, r in resources.items())
    by_type: dict[str, list] = {}
    for r in resources.values():
        by_type.setdefault(r["resourceType"], []).append(r)
    (report,), (device,) = by_type["DiagnosticReport"], by_type["Device"]
    observations = by_type["Observation"]
    assert set(by_type) == {"DiagnosticReport", "Observation", "Device"}
    assert [resources[ref["reference"]] for ref in report["result"]] == observations
    assert all(resources[o["device"]["reference"]] is device for o in observations)
    assert report["status"] == "preliminary" and {o["status"] for o in observations} == {"preliminary"}
    assert report["subject"] == {"identifier": {"value": IDENTIFIERS["PatientID"]}}
    assert report["imagingStudy"][0]["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY}"}
    assert report["basedOn"][0]["identifier"]["value"] == IDENTIFIERS["AccessionNumber"]
    assert report["effectiveDateTime"] == "2026-12-07"
    for secret in SECRETS.values():
        assert secret not in text

    manifest = json.loads((art / "manifest.json").read_text())
    assert device["deviceName"] == [{"name": records[0]["model_id"], "type": "model-name"}]
    assert device["identifier"][0]["value"] == manifest["artifact_sha256"]
    versions = {v["type"]["text"]: v["value"] for v in device["version"]}
    assert versions["software"].startswith("mxa-edge ") and versions["artifact_sha256"] == manifest["artifact_sha256"]
    notes = [n["text"] for n in device["note"]]
    assert "drift gate: passed" in notes[0] and notes[1].startswith("signature: ")

    from mxa_edge.runtime.dicom_out import finding_code

    def component(obs, code):
        (value,) = [c for c in obs["component"] if c["code"]["coding"][0]["code"] == code]
        return value

    findings, guards = {}, {}
    for obs in observations:
        sop = component(obs, "121112")["valueString"]
        if obs["code"]["coding"][0]["code"] == "INPUTGUARD":
            guards[sop] = obs
        else:
            findings[(sop, obs["code"]["text"])] = obs
    dicom_records = [by_file[str(f)] for f in files]
    assert len(findings) == sum(len(r["findings"]) for r in dicom_records)
    for record in dicom_records:
        sop = record["dicom"]["sop_uid"]
        for label, expected in record["findings"].items():
            obs = findings[(sop, label)]
            coding = obs["code"]["coding"][0]
            assert coding["code"] == finding_code(label).value and coding["display"] == finding_code(label).meaning
            assert obs["valueQuantity"]["value"] == pytest.approx(expected["probability"], abs=1e-12)
            assert obs["valueQuantity"]["code"] == "1"
            assert component(obs, "122411")["valueQuantity"]["value"] == pytest.approx(expected["threshold"], abs=1e-12)
            assert obs["interpretation"][0]["coding"][0]["code"] == ("POS" if expected["positive"] else "NEG")
            assert obs["method"]["text"] == f"operating point: {expected['policy']}"
        if record["in_distribution"] is not None:
            guard = guards[sop]
            assert guard["valueBoolean"] == record["in_distribution"]
            assert component(guard, "GUARDSCORE")["valueQuantity"]["value"] == pytest.approx(record["ood_score"])
        positives = ", ".join(record["positives"]) or "no finding above its threshold"
        assert positives in report["conclusion"]

    try:
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError:
        return  # the structure is checked above; fhir.resources ([test] extra) adds the schema check
    get_fhir_model_class("Bundle").model_validate(bundle)
    for r in resources.values():
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_real_dicom_sample_gets_an_sr(study, tmp_path):
    from conftest import shared_path

    folder = shared_path("data", "real-samples", "images")
    sample = next(iter(sorted(folder.glob("*.dcm"))), None)
    if sample is None:
        pytest.skip(f"no DICOM file in {folder}")
    art = study[0]
    proc = subprocess.run(
        CLI + ["predict", str(sample), "--model", str(art), "--json", "--sr", str(tmp_path / "sr")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (record,) = json.loads(proc.stdout)
    (path,) = (tmp_path / "sr").glob("*.dcm")
    assert record["sr"] == str(path)
    sr = pydicom.dcmread(path)
    source = pydicom.dcmread(sample, stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.get("PatientID", "")
    assert sr.SOPInstanceUID != source.SOPInstanceUID
    if shutil.which("dsrdump"):
        dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0 and "Error" not in dump.stdout + dump.stderr, dump.stdout + dump.stderr
