"""``mxa-edge serve``: a real DICOM node in a subprocess, real SCUs (pynetdicom, DCMTK), a real artifact.

Every server binds 127.0.0.1 on a free port and stops by itself (--max-studies / --run-seconds);
every subprocess and wait has a timeout. The report is ``mxa_edge.runtime.dicom_out``'s TID 1500 SR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # to build the artifact; the node itself is torch-free
pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")  # the structured report (mxa_edge.runtime.dicom_out)

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from mxa_edge.runtime.node import AUDIT_FILE, report_uids  # noqa: E402

CLI = [sys.executable, "-m", "mxa_edge_cli.app"]
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


@pytest.fixture(scope="module")
def served(small_onnx_artifact):
    """(artifact folder, its digest, frontal phantom gray images, env for the server subprocess)."""
    run, art = small_onnx_artifact
    digest = json.loads((art / "manifest.json").read_text())["artifact_sha256"]
    images = _frontal_images(run)[:40]
    env = dict(os.environ)
    return art, digest, images, env


def _frontal_images(run: Path) -> list[np.ndarray]:
    """Gray [0, 1] frontal images of the run's held-out split (phantoms)."""
    from mxa_edge.data.chexpert import read_split
    from mxa_edge.formats import RunRecord
    from mxa_edge.imaging.imageio import load_radiograph

    valid = read_split(Path(RunRecord.load(run).data.root), "valid", frontal_only=False)
    return [load_radiograph(p) for p, v in zip(valid.paths, valid.views) if v == "Frontal"]


def _cr(path: Path, gray: np.ndarray, study: str, instance: int) -> Path:
    """A DX chest PA DICOM file of a gray [0, 1] image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, generate_uid(), instance
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", "PA", "CHEST"
    pixels = np.round(gray * 4095).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _studies(folder: Path, images: list[np.ndarray], n_studies: int, per_study: int) -> dict[str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    out, k = {}, 0
    for _ in range(n_studies):
        study = generate_uid()
        out[study] = []
        for i in range(per_study):
            out[study].append(_cr(folder / f"{study}-{i}.dcm", images[k % len(images)], study, i + 1))
            k += 1
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(served, queue: Path, port: int, *args, log: Path) -> subprocess.Popen:
    art, _, _, env = served
    cmd = [*CLI, "serve", "--model", str(art), "--host", "127.0.0.1", "--port", str(port), "--queue", str(queue)]
    f = open(log, "ab")
    proc = subprocess.Popen([*cmd, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, env=env)
    f.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # listening once the artifact is loaded and verified
        if proc.poll() is not None:
            pytest.fail(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"serve did not listen within 90 s: {log.read_text()[-2000:]}")


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"serve did not stop by itself: {log.read_text()[-2000:]}")
    assert rc == 0, log.read_text()[-2000:]


def _send(port: int, files: list[Path]) -> None:
    """One association (pynetdicom SCU) per call; every instance must be acknowledged 0x0000."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(DX_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="MXAEDGE")
    assert assoc.is_established
    try:
        for f in files:
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0x0000
    finally:
        assoc.release()


def _audit(queue: Path) -> list[dict]:
    path = queue / AUDIT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _sr_findings(sr: pydicom.Dataset) -> dict[str, dict[str, tuple[float, bool]]]:
    """{source SOP Instance UID: {label: (probability, positive)}} from the SR's measurement groups."""
    from mxa_edge.runtime.dicom_out import FINDING_CODES

    label_of = {meaning: label for label, (_, _, meaning) in FINDING_CODES.items()}
    found: dict = {}

    def walk(items):
        for item in items:
            children = list(item.get("ContentSequence", []))
            names = {c.ConceptNameCodeSequence[0].CodeMeaning: c for c in children if "ConceptNameCodeSequence" in c}
            if item.ValueType == "CONTAINER" and "Finding" in names and "Probability" in names:
                label = label_of[names["Finding"].ConceptCodeSequence[0].CodeMeaning]
                probability = float(names["Probability"].MeasuredValueSequence[0].NumericValue)
                decision = next(c for c in children if c.ValueType == "CODE" and c is not names["Finding"])
                sop = names["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                positive = decision.ConceptCodeSequence[0].CodeMeaning == "Present"
                found.setdefault(str(sop), {})[label] = (probability, positive)
            walk(children)

    walk(sr.ContentSequence)
    return found


def _reports(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def test_study_over_pynetdicom_gives_one_report_with_predicts_findings(served, tmp_path):
    art, digest, images, _ = served
    study, files = next(iter(_studies(tmp_path / "in", images, 1, 2).items()))
    out, queue, log, port = tmp_path / "out", tmp_path / "q", tmp_path / "serve.log", _free_port()
    proc = _serve(served, queue, port, "--out", out, "--max-studies", 1, "--run-seconds", 60, log=log)
    _send(port, files)
    _finish(proc, log)

    (sr,) = _reports(out)
    sops = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    series, (uid,) = report_uids(study, digest, sops, 1)
    assert sr.StudyInstanceUID == study and sr.SOPInstanceUID == uid and sr.SeriesInstanceUID == series
    assert sr.Modality == "SR"
    in_report = _sr_findings(sr)

    events = _audit(queue)
    kinds = [e["event"] for e in events]
    assert kinds.count("received") == 2 and kinds.count("predicted") == 2 and kinds.count("sent") == 1
    assert all(e["calling_ae"] == "TESTSCU" for e in events if e["event"] == "received")
    sent = next(e for e in events if e["event"] == "sent")
    assert sent["study_uid"] == study and sent["artifact_sha256"] == digest and sent["latency_s"] >= 0
    assert sent["destination"] == str(out)

    proc = subprocess.run(
        [*CLI, "predict", *map(str, files), "--model", str(art), "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    expected = {r["dicom"]["sop_uid"]: r for r in json.loads(proc.stdout)}
    predicted = {e["sop_uid"]: e for e in events if e["event"] == "predicted"}
    assert set(predicted) == set(expected) == set(sops) == set(in_report)
    for sop, row in expected.items():
        got = predicted[sop]
        assert got["positives"] == row["positives"]
        assert got["in_distribution"] == row["in_distribution"]
        for label, finding in row["findings"].items():
            assert got["probabilities"][label] == pytest.approx(finding["probability"], abs=1e-6)
            assert got["thresholds"][label] == pytest.approx(finding["threshold"], abs=1e-9)
            assert in_report[sop][label][0] == pytest.approx(finding["probability"], abs=1e-6)
            assert in_report[sop][label][1] == finding["positive"]


def test_study_over_dcmtk_storescu(served, tmp_path):
    storescu = shutil.which("storescu")
    if storescu is None:
        pytest.skip("DCMTK storescu is not installed")
    _, _, images, _ = served
    study, files = next(iter(_studies(tmp_path / "in", images, 1, 2).items()))
    out, queue, log, port = tmp_path / "out", tmp_path / "q", tmp_path / "serve.log", _free_port()
    proc = _serve(served, queue, port, "--out", out, "--max-studies", 1, "--run-seconds", 60, log=log)
    sent = subprocess.run(
        [storescu, "-aet", "DCMTK", "-aec", "MXAEDGE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    _finish(proc, log)
    (sr,) = _reports(out)
    assert sr.StudyInstanceUID == study
    received = [e for e in _audit(queue) if e["event"] == "received"]
    assert len(received) == 2 and {e["calling_ae"] for e in received} == {"DCMTK"}


def test_sigkill_after_receipt_then_restart_delivers_each_study_once(served, tmp_path):
    _, _, images, _ = served
    n = 6
    studies = _studies(tmp_path / "in", images, n, 1)
    queue, out, log = tmp_path / "q", tmp_path / "out", tmp_path / "serve.log"
    dead = f"NOBODY@127.0.0.1:{_free_port()}"  # destination down: nothing can be sent before the kill
    port = _free_port()
    proc = _serve(served, queue, port, "--send-to", dead, "--idle-timeout", 0.5, "--run-seconds", 120, log=log)
    for files in studies.values():
        _send(port, files)  # acknowledged = durably queued
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not out.exists()

    port = _free_port()
    proc = _serve(
        served, queue, port, "--out", out, "--max-studies", n, "--idle-timeout", 0.5, "--run-seconds", 60, log=log
    )
    _finish(proc, log)
    reports = _reports(out)
    assert sorted(str(r.StudyInstanceUID) for r in reports) == sorted(studies)
    for study in studies:
        ledger = json.loads((queue / "sent" / f"{study}.json").read_text())
        assert len(ledger["reports"]) == 1 and len(ledger["reports"][0]["sop_uids"]) == 1
    assert not any((queue / "outbox").iterdir()) and not any((queue / "ready").iterdir())

    # The SCU, unsure after the crash, sends every study again: nothing new is delivered.
    port = _free_port()
    proc = _serve(
        served, queue, port, "--out", out, "--max-studies", n, "--idle-timeout", 0.5, "--run-seconds", 60, log=log
    )
    for files in studies.values():
        _send(port, files)
    _finish(proc, log)
    assert sorted(p.name for p in out.glob("*.dcm")) == sorted(f"{r.SOPInstanceUID}.dcm" for r in reports)
    assert sum(e["event"] == "sent" for e in _audit(queue)) == n


def test_destination_down_then_up_delivers_the_backlog(served, tmp_path):
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    _, _, images, _ = served
    n = 3
    studies = _studies(tmp_path / "in", images, n, 1)
    queue, log = tmp_path / "q", tmp_path / "serve.log"
    dest_port, port = _free_port(), _free_port()
    proc = _serve(
        served,
        queue,
        port,
        "--send-to",
        f"PACS@127.0.0.1:{dest_port}",
        "--max-studies",
        n,
        "--run-seconds",
        90,
        log=log,
    )
    for files in studies.values():
        _send(port, files)
    _wait_for(lambda: any(e["event"] == "send_failed" for e in _audit(queue)), 60, "a failed send")

    received: list[pydicom.Dataset] = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.supported_contexts = AllStoragePresentationContexts
    server = pacs.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        _finish(proc, log)
    finally:
        server.shutdown()
    assert sorted(str(ds.StudyInstanceUID) for ds in received) == sorted(studies)
    assert len({str(ds.SOPInstanceUID) for ds in received}) == n
    events = _audit(queue)
    assert sum(e["event"] == "sent" for e in events) == n
    assert all(e["destination"] == f"PACS@127.0.0.1:{dest_port}" for e in events if e["event"] == "send_failed")


def test_bad_destination_is_refused_before_loading(served, tmp_path):
    art, _, _, env = served
    proc = subprocess.run(
        [*CLI, "serve", "--model", str(art), "--send-to", "no-port", "--queue", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "AE@HOST:PORT" in proc.stderr


def test_only_allowed_callers_and_json_log_lines(served, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    queue, log, port = tmp_path / "q", tmp_path / "serve.log", _free_port()
    proc = _serve(
        served, queue, port, "--out", tmp_path / "out", "--allow-ae", "MODALITY1", "--json", "--run-seconds", 6, log=log
    )
    ae = AE(ae_title="INTRUDER")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(DX_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="MXAEDGE")
    assert assoc.is_rejected
    _finish(proc, log)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [r["event"] for r in records if "event" in r][:1] == ["started"] and records[-1]["event"] == "stopped"
    assert records[-1]["finished"] == 0 and not any(e["event"] == "received" for e in _audit(queue))


def test_port_in_use_is_one_line_error(served, tmp_path):
    art, _, _, env = served
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                *CLI,
                "serve",
                "--model",
                str(art),
                "--port",
                str(port),
                "--out",
                str(tmp_path / "out"),
                "--queue",
                str(tmp_path / "q"),
                "--run-seconds",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr, proc.stderr[-2000:]


def test_a_machine_that_does_not_reproduce_the_gate_is_refused_before_listening(served, tmp_path):
    """Golden logits that this CPU cannot reproduce (edited, every hash and the digest redone, as
    a consistent forgery or a foreign CPU would look): serve exits 8 before it serves anything."""
    from mxa_edge.formats.artifact import DIGEST_FIELD, manifest_digest
    from mxa_edge.support.fileio import sha256_file

    art, _, _, env = served
    copy = tmp_path / "art"
    shutil.copytree(art, copy)
    golden = "golden/logits_exported.npy"
    np.save(copy / golden, np.load(copy / golden) + 1.0)
    m = json.loads((copy / "manifest.json").read_text())
    m["files"][golden] = m["verification"]["files"][golden] = sha256_file(copy / golden)
    m[DIGEST_FIELD] = manifest_digest(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    port = _free_port()
    proc = subprocess.run(
        [
            *CLI,
            "serve",
            "--model",
            str(copy),
            "--port",
            str(port),
            "--out",
            str(tmp_path / "out"),
            "--queue",
            str(tmp_path / "q"),
            "--run-seconds",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "does not reproduce" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
