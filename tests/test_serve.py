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
from dicom_factory import DX_STORAGE, write_studies  # noqa: E402

from mxa_edge.runtime.node import AUDIT_FILE, report_uids  # noqa: E402

CLI = [sys.executable, "-m", "mxa_edge_cli.app"]


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


def _studies(folder: Path, images: list[np.ndarray], n_studies: int, per_study: int) -> dict[str, list[Path]]:
    """DX chest PA studies (tests/dicom_factory.py): {StudyInstanceUID: files}."""
    return write_studies(folder, images, n_studies, per_study)


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


def _fhir_findings(bundle: dict) -> dict[str, dict[str, tuple[float, bool]]]:
    """{source SOP Instance UID: {label: (probability, positive)}} from a --fhir Bundle's Observations."""
    found: dict = {}
    for entry in bundle["entry"]:
        obs = entry["resource"]
        if obs["resourceType"] != "Observation" or "valueQuantity" not in obs:
            continue
        (sop,) = [c["valueString"] for c in obs["component"] if c["code"]["coding"][0]["code"] == "121112"]
        positive = obs["interpretation"][0]["coding"][0]["code"] == "POS"
        found.setdefault(sop, {})[obs["code"]["text"]] = (obs["valueQuantity"]["value"], positive)
    return found


def _reports(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def test_study_over_pynetdicom_gives_one_report_with_predicts_findings(served, tmp_path):
    art, digest, images, _ = served
    study, files = next(iter(_studies(tmp_path / "in", images, 1, 2).items()))
    out, queue, log, port = tmp_path / "out", tmp_path / "q", tmp_path / "serve.log", _free_port()
    fhir = tmp_path / "fhir"
    proc = _serve(served, queue, port, "--out", out, "--fhir", fhir, "--max-studies", 1, "--run-seconds", 60, log=log)
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

    # --fhir: the same findings as a FHIR R4 Bundle, written when the SR was delivered.
    (bundle_path,) = fhir.glob("*.json")
    assert sent["fhir"] == str(bundle_path)
    in_bundle = _fhir_findings(json.loads(bundle_path.read_text()))
    assert set(in_bundle) == set(sops)
    for sop, row in expected.items():
        for label, finding in row["findings"].items():
            assert in_bundle[sop][label][0] == pytest.approx(finding["probability"], abs=1e-6)
            assert in_bundle[sop][label][1] == finding["positive"]


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


def _send_batches(port: int, batches: list[list[str]], studies: dict[str, list[Path]], failed: list) -> None:
    """An SCU that keeps going: one association per batch of studies; a batch whose association
    could not be opened, stored or released is appended to ``failed`` (the node may have died)."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    for batch in batches:
        ae = AE(ae_title="TESTSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(DX_STORAGE, ExplicitVRLittleEndian)
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title="MXAEDGE")
            ok = assoc.is_established
            for f in (f for study in batch for f in studies[study]) if ok else ():
                if getattr(assoc.send_c_store(pydicom.dcmread(f)), "Status", None) != 0x0000:
                    ok = False
                    break
            if ok:
                assoc.release()
                ok = assoc.is_released
            elif assoc.is_established:
                assoc.abort()
        except Exception:  # the node was killed under it
            ok = False
        if not ok:
            failed.append(batch)


def _srs_by_study(folder: Path) -> dict[str, list[str]]:
    """{StudyInstanceUID the SR references as its evidence: [SR SOP Instance UIDs]} in ``folder``."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.dcm")):
        sr = pydicom.dcmread(path)
        (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
        assert evidence.StudyInstanceUID == sr.StudyInstanceUID
        found.setdefault(str(evidence.StudyInstanceUID), []).append(str(sr.SOPInstanceUID))
    return found


def _queue_drained(queue: Path) -> bool:
    return not any(any((queue / stage).iterdir()) for stage in ("incoming", "ready", "outbox"))


def test_sigkill_mid_delivery_then_restart_delivers_each_of_50_studies_once(served, tmp_path):
    """The issue's acceptance: 50 studies over several associations (two SCU threads), SIGKILL once
    some but not all reports were delivered, restart on the same queue, the SCU sends again what it
    was not sure of (the batches whose association failed), then everything once more: every study
    has exactly one SR at the destination."""
    import threading

    _, _, images, _ = served
    n = 50
    studies = _studies(tmp_path / "in", images, n, 1)  # one image each: the SR's build is most of the time
    uids = list(studies)
    batches = [uids[i : i + 5] for i in range(0, n, 5)]  # 10 associations of 5 studies
    queue, out, log = tmp_path / "q", tmp_path / "out", tmp_path / "serve.log"
    # --idle-timeout well above a restart: what the kill cut waits for the SCU's resend rather than
    # being completed by the idle clock first (with several images a study, a half study's SR would
    # be followed by a second round's).
    serve_args = ("--out", out, "--idle-timeout", 30, "--run-seconds", 120)
    port = _free_port()
    proc = _serve(served, queue, port, *serve_args, log=log)
    failed: list = []
    senders = [
        threading.Thread(target=_send_batches, args=(port, batches[k::2], studies, failed), daemon=True)
        for k in range(2)
    ]
    for t in senders:
        t.start()
    _wait_for(lambda: out.is_dir() and any(out.glob("*.dcm")), 60, "the first report")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    for t in senders:
        t.join(timeout=60)
    at_kill = len(list(out.glob("*.dcm")))
    assert 0 < at_kill < n, f"{at_kill} reports when the node was killed"

    port = _free_port()
    proc = _serve(served, queue, port, *serve_args, log=log)
    try:
        for batch in failed:
            _send(port, [f for study in batch for f in studies[study]])
        _wait_for(lambda: len(_srs_by_study(out)) == n and _queue_drained(queue), 90, "every study's report")
        # The SCU, unsure after the crash, sends every study again: nothing new is delivered.
        before = len(_audit(queue))
        for batch in batches:
            _send(port, [f for study in batch for f in studies[study]])
        _wait_for(
            lambda: sum(e["event"] == "duplicate" for e in _audit(queue)[before:]) == n and _queue_drained(queue),
            60,
            "the resends handled",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
    _finish(proc, log)

    by_study = _srs_by_study(out)
    assert sorted(by_study) == sorted(studies)
    assert all(len(srs) == 1 for srs in by_study.values()), {s: v for s, v in by_study.items() if len(v) > 1}
    for study, files in studies.items():
        sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
        assert by_study[study] == report_uids(study, served[1], sops, 1)[1]
        ledger = json.loads((queue / "sent" / f"{study}.json").read_text())
        assert [e["sop_uids"] for e in ledger["reports"]] == [by_study[study]]
    events = _audit(queue)
    assert {e["sop_uid"] for e in events if e["event"] == "sent"} == {u for v in by_study.values() for u in v}
    assert not any(e["event"] == "new_round" for e in events)
    assert _queue_drained(queue)


def _predecessors(sr: pydicom.Dataset) -> list[tuple[str, str, str]]:
    """(Series, SOP Class, SOP Instance UID) of each report the SR says it supersedes."""
    return [
        (str(series.SeriesInstanceUID), str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]


def test_late_instance_starts_a_new_round_whose_sr_supersedes_the_first(served, tmp_path):
    """An instance of a study that arrives (second association) after the study's SR was delivered:
    round 2, a new SR of the whole study (new UIDs from all its instances, InstanceNumber 2) that
    names the first SR as its predecessor; the same late instance sent once more changes nothing."""
    _, digest, images, _ = served
    study, files = next(iter(_studies(tmp_path / "in", images, 1, 2).items()))
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    out, queue, log, port = tmp_path / "out", tmp_path / "q", tmp_path / "serve.log", _free_port()
    fhir = tmp_path / "fhir"
    proc = _serve(served, queue, port, "--out", out, "--fhir", fhir, "--max-studies", 3, "--run-seconds", 60, log=log)
    _send(port, files[:1])
    _wait_for(lambda: any(e["event"] == "sent" for e in _audit(queue)), 30, "the first report")
    _send(port, files[1:])
    _wait_for(lambda: sum(e["event"] == "sent" for e in _audit(queue)) == 2, 30, "the second report")
    _send(port, files[1:])  # a retrying SCU: the same late instance again
    _finish(proc, log)

    series, (first_uid,) = report_uids(study, digest, sops[:1], 1)
    _, (second_uid,) = report_uids(study, digest, sops, 1)
    assert first_uid != second_uid
    reports = {str(r.SOPInstanceUID): r for r in _reports(out)}
    assert sorted(reports) == sorted([first_uid, second_uid])
    first, second = reports[first_uid], reports[second_uid]
    assert first.InstanceNumber == 1 and second.InstanceNumber == 2
    assert first.SeriesInstanceUID == second.SeriesInstanceUID == series
    assert set(_sr_findings(first)) == set(sops[:1]) and set(_sr_findings(second)) == set(sops)
    assert _predecessors(first) == [] and _predecessors(second) == [(series, str(first.SOPClassUID), first_uid)]
    if shutil.which("dsrdump"):
        dump = subprocess.run(["dsrdump", str(out / f"{second_uid}.dcm")], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0 and "Error" not in dump.stdout + dump.stderr, dump.stdout + dump.stderr

    events = _audit(queue)
    (new_round,) = [e for e in events if e["event"] == "new_round"]
    assert new_round["study_uid"] == study and new_round["round"] == 2 and new_round["calling_ae"] == "TESTSCU"
    assert new_round["new_instances"] == sops[1:] and new_round["instances"] == 2
    assert new_round["supersedes"] == [first_uid]
    sent = [(e["round"], e["sop_uid"], e.get("supersedes")) for e in events if e["event"] == "sent"]
    assert sent == [(1, first_uid, None), (2, second_uid, [first_uid])]
    predicted = [(e["round"], e["sop_uid"]) for e in events if e["event"] == "predicted"]
    assert sorted(predicted) == sorted([(1, sops[0]), (2, sops[0]), (2, sops[1])])  # round 2: the whole study
    (duplicate,) = [e for e in events if e["event"] == "duplicate"]
    assert duplicate["sop_uid"] == second_uid
    ledger = json.loads((queue / "sent" / f"{study}.json").read_text())["reports"]
    assert [(e["round"], e["sop_uids"], e["instances"]) for e in ledger] == [
        (1, [first_uid], sops[:1]),
        (2, [second_uid], sorted(sops)),
    ]
    # --fhir: a Bundle per round; the second's DiagnosticReport has the first's id (a FHIR update of it).
    bundles = [json.loads(Path(e["fhir"]).read_text()) for e in events if e["event"] == "sent"]
    assert sorted(p.name for p in fhir.glob("*.json")) == sorted(f"{b['id']}.json" for b in bundles)
    assert [set(_fhir_findings(b)) for b in bundles] == [set(sops[:1]), set(sops)]
    (report1,), (report2,) = (
        [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"] for b in bundles
    )
    assert report1["id"] == report2["id"] and bundles[0]["id"] != bundles[1]["id"]


def test_late_instance_before_the_first_report_was_delivered_replaces_it(served, tmp_path):
    """Destination down: round 1's SR is still in the outbox when the late instance arrives; round 2
    replaces it there, and only the SR of the whole study (no predecessor) reaches the PACS."""

    _, digest, images, _ = served
    study, files = next(iter(_studies(tmp_path / "in", images, 1, 2).items()))
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    queue, log = tmp_path / "q", tmp_path / "serve.log"
    dest_port, port = _free_port(), _free_port()
    destination = f"PACS@127.0.0.1:{dest_port}"
    proc = _serve(served, queue, port, "--send-to", destination, "--max-studies", 1, "--run-seconds", 60, log=log)
    meta = queue / "outbox" / study / "meta.json"
    _send(port, files[:1])
    _wait_for(lambda: any(e["event"] == "send_failed" for e in _audit(queue)), 30, "a failed send")
    _send(port, files[1:])
    _wait_for(lambda: meta.is_file() and json.loads(meta.read_text())["round"] == 2, 30, "round 2 in the outbox")

    received = _destination_returns(dest_port, proc, log)
    _, (first_uid,) = report_uids(study, digest, sops[:1], 1)
    _, (second_uid,) = report_uids(study, digest, sops, 1)
    (sr,) = received
    assert sr.SOPInstanceUID == second_uid and sr.InstanceNumber == 2 and _predecessors(sr) == []
    events = _audit(queue)
    (new_round,) = [e for e in events if e["event"] == "new_round"]
    assert new_round["superseded_unsent"] == [first_uid] and new_round["supersedes"] == []
    assert [e["sop_uid"] for e in events if e["event"] == "sent"] == [second_uid]


def _destination_returns(dest_port: int, proc, log) -> list[pydicom.Dataset]:
    """The destination PACS comes up on ``dest_port`` (127.0.0.1) and takes what the node sends until
    the node stops by itself; returns the datasets it received."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

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
    return received


def test_destination_down_then_up_delivers_the_backlog(served, tmp_path):

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

    received = _destination_returns(dest_port, proc, log)
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


def _serve_briefly(model, port: int, tmp_path, env) -> subprocess.CompletedProcess:
    """``mxa-edge serve`` on 127.0.0.1:``port`` for at most 5 s (out and queue under ``tmp_path``):
    for the checks that must refuse before it listens."""
    return subprocess.run(
        [
            *CLI,
            "serve",
            "--model",
            str(model),
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


def test_port_in_use_is_one_line_error(served, tmp_path):
    art, _, _, env = served
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve_briefly(art, port, tmp_path, env)
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
    proc = _serve_briefly(copy, port, tmp_path, env)
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "does not reproduce" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
