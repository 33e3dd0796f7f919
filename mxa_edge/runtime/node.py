"""``mxa-edge serve``: a DICOM node that receives studies, predicts them and sends a structured report.

    predictor = Predictor(artifact, verify=True)            # verified ONCE, before the port opens
    Node(predictor, NodeConfig(port=11112, destination=parse_destination(None, "out/"))).run()

A modality or PACS pushes images (C-STORE, any storage SOP class) to ``ae_title`` at ``host:port``.
Nothing acknowledged is lost: each instance is written to the durable queue (temporary name,
fsync, rename) *before* the SCP answers 0x0000. The queue folder::

    QUEUE/incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm   received, study not yet predicted
    QUEUE/ready/<StudyInstanceUID>                           marker: the study is complete
    QUEUE/outbox/<StudyInstanceUID>/{report-*.dcm,meta.json} predicted, report not yet delivered
                                                             (and fhir.json with --fhir)
    QUEUE/done/<StudyInstanceUID>/<SOPInstanceUID>.dcm       instances whose report was made
    QUEUE/sent/<StudyInstanceUID>.json                       ledger: every report UID delivered
    QUEUE/audit.jsonl                                        one JSON object per event
    QUEUE/serve.lock                                         flock: one node per queue

Completion: a study is complete when the association that carried it is released or aborted, or
when no new instance of it arrived for ``idle_timeout`` seconds (an SCU that keeps its association
open). Threads: pynetdicom's (one per association) only write files and note arrival times; the
main thread runs the idle clock and the stop conditions; ONE worker thread predicts ready studies,
one at a time, and delivers reports (the Predictor is used from that thread only).

Idempotency: a report's SOP/Series Instance UIDs are derived from the study, the artifact digest
and the SOP Instance UIDs it covers (``report_uids``), so re-predicting the same study after a crash
gives the same UIDs, and the ledger ``sent/<study>.json`` stops a second delivery of a UID. A study
sent again by a retrying SCU (same instances) therefore yields nothing new (audit ``duplicate``; it
is not even predicted again). The only window left is a crash between a successful delivery and the
ledger write: the report is sent again with the SAME UID (a file of the same name in ``--out``; a
duplicate UID a PACS recognises).

A late instance (one that arrives, on any association, after its study's report was made) starts a
new ROUND: the whole study (earlier instances from ``done/`` predicted again, plus the new ones) gets
a new report whose UIDs derive from all the instances it covers, whose InstanceNumber is the round,
and whose Predecessor Documents Sequence names the delivered report(s) of the earlier rounds: it
supersedes them, so a consumer keeps the latest SR of the study. The audit has ``new_round`` (round,
the new instances, the superseded report UIDs) and ``round`` on ``predicted`` and ``sent``; the
ledger records each round. An earlier round whose report was not yet delivered (destination down)
is replaced in the outbox by the new one (``superseded_unsent`` in the audit): only the report of
the whole study is sent.

A destination that is down: retried with exponential backoff (``retry_initial`` doubling up to
``retry_cap`` seconds); the study stays in the outbox and the backlog is logged. On start everything
pending is resumed: outbox -> delivery, ready -> prediction, incoming -> the idle clock from the time
its last instance was written. So a SIGKILL then a restart delivers every study's report once.

Torch-free: numpy, pydicom, pynetdicom and the engine's runtime only.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mxa_edge.support.errors import ConfigError, MxaError

INCOMING, READY, OUTBOX, DONE, SENT = "incoming", "ready", "outbox", "done", "sent"
AUDIT_FILE, LOCK_FILE, FHIR_FILE = "audit.jsonl", "serve.lock", "fhir.json"
DEFAULT_AE_TITLE, DEFAULT_PORT, DEFAULT_HOST = "MXAEDGE", 11112, "127.0.0.1"
DEFAULT_QUEUE, DEFAULT_IDLE_TIMEOUT = "mxa-edge-queue", 10.0
STATUS_SUCCESS, STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # also what makes a UID safe as a file name
_DEST = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>[0-9]{1,5})$")


class SendError(MxaError):
    """The destination refused or could not be reached; the report stays in the outbox."""


@dataclass(frozen=True)
class Destination:
    """Where reports go: a DICOM SCP (``ae_title@host:port``) or a folder."""

    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    folder: Path | None = None

    def __str__(self) -> str:
        return str(self.folder) if self.folder is not None else f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(send_to: str | None, out) -> Destination:
    """``--send-to AE@HOST:PORT`` or ``--out DIR`` (exactly one); ConfigError otherwise."""
    if (send_to is None) == (out is None):
        raise ConfigError("give exactly one destination for the reports: --send-to AE@HOST:PORT or --out DIR")
    if out is not None:
        return Destination(folder=Path(out))
    m = _DEST.match(send_to.strip())
    if m is None or not 0 < int(m["port"]) < 65536:
        raise ConfigError(f"--send-to {send_to!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104 (AE up to 16 chars)")
    return Destination(ae_title=m["ae"], host=m["host"], port=int(m["port"]))


@dataclass
class NodeConfig:
    destination: Destination
    ae_title: str = DEFAULT_AE_TITLE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_ae: tuple[str, ...] = ()  # calling AE titles accepted; () = any
    queue: Path = Path(DEFAULT_QUEUE)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_studies: int | None = None  # stop after this many studies were finished (reported or all skipped)
    run_seconds: float | None = None  # stop after this long
    retry_initial: float = 0.5
    retry_cap: float = 60.0
    network_timeout: float = 30.0
    status_every: float = 30.0  # seconds between periodic status lines
    fhir: Path | None = None  # also write each report as a FHIR R4 Bundle (fhir_out) into this folder


def report_uids(study_uid: str, artifact_sha256: str, sop_uids, n: int) -> tuple[str, list[str]]:
    """(Series Instance UID, one SOP Instance UID per report dataset), the same on every run for the
    same study, artifact and instances: ``2.25.<UUID v5 of them>`` (pydicom's ``generate_uid`` ignores
    its entropy sources when the prefix is None, so it cannot be used here)."""
    sops = sorted(sop_uids)
    series = _uuid_uid(study_uid, artifact_sha256, "series")
    return series, [_uuid_uid(study_uid, artifact_sha256, *sops, str(i)) for i in range(n)]


def _uuid_uid(*parts: str) -> str:
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, chr(0).join(parts)).int}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temporary name in the same folder, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dataset_bytes(ds) -> bytes:
    """A DICOM Part-10 file of ``ds`` (file meta added when missing)."""
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class AuditLog:
    """``QUEUE/audit.jsonl``: one JSON object per line, each line one O_APPEND write (never interleaved)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> dict:
        record = {"time": utc_now(), "event": event, **{k: v for k, v in fields.items() if v is not None}}
        line = (json.dumps(record, allow_nan=False, default=_json_default) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
        return record

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _json_default(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class StudyQueue:
    """The queue folder's layout and every move between its stages (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for stage in (INCOMING, READY, OUTBOX, DONE, SENT):
            (self.root / stage).mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """One node per queue folder (an flock, released by the kernel even after a SIGKILL); then
        drop what a killed node left half-written (temporary names: never acknowledged or sent)."""
        import fcntl

        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.root}: queue in use by another mxa-edge serve; give each node its own --queue"
            ) from None
        self._lock_fd = fd
        for stage in (INCOMING, READY, OUTBOX, DONE, SENT):
            for tmp in [*self.stage(stage).glob(".*.tmp"), *self.stage(stage).glob("*/.*.tmp")]:
                tmp.unlink(missing_ok=True)
        for partial in self.stage(OUTBOX).glob(".*.partial"):
            shutil.rmtree(partial, ignore_errors=True)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def stage(self, name: str, study: str = "") -> Path:
        return self.root / name / study if study else self.root / name

    def store(self, study: str, sop: str, data: bytes) -> Path:
        path = self.stage(INCOMING, study) / f"{sop}.dcm"
        _fsync_write(path, data)
        return path

    def mark_ready(self, study: str) -> None:
        _fsync_write(self.stage(READY, study), utc_now().encode())

    def instances(self, study: str) -> tuple[list[Path], list[Path]]:
        """(new files in incoming, files of earlier rounds in done)."""
        new = sorted(self.stage(INCOMING, study).glob("*.dcm"))
        old = sorted(self.stage(DONE, study).glob("*.dcm"))
        return new, old

    def incoming_studies(self) -> list[str]:
        return sorted(p.name for p in self.stage(INCOMING).iterdir() if p.is_dir() and any(p.glob("*.dcm")))

    def ready_studies(self) -> list[str]:
        return sorted(p.name for p in self.stage(READY).iterdir() if _UID.match(p.name))

    def outbox_studies(self) -> list[str]:
        return sorted(p.name for p in self.stage(OUTBOX).iterdir() if (p / "meta.json").is_file())

    def ledger(self, study: str) -> dict:
        path = self.stage(SENT) / f"{study}.json"
        return json.loads(path.read_text()) if path.is_file() else {"study_uid": study, "reports": []}

    def record_sent(self, study: str, entry: dict) -> None:
        ledger = self.ledger(study)
        ledger["reports"].append(entry)
        _fsync_write(self.stage(SENT) / f"{study}.json", (json.dumps(ledger, indent=2) + "\n").encode())

    def write_outbox(self, study: str, datasets: list, meta: dict, files: dict[str, bytes] | None = None) -> None:
        """The study's report datasets, ``meta.json`` and any other ``files`` (name: bytes), all or nothing."""
        box = self.stage(OUTBOX, study)
        tmp = Path(tempfile.mkdtemp(prefix=f".{study}.", suffix=".partial", dir=self.stage(OUTBOX)))
        try:
            for i, ds in enumerate(datasets):
                _fsync_write(tmp / f"report-{i}.dcm", _dataset_bytes(ds))
            for name, data in (files or {}).items():
                _fsync_write(tmp / name, data)
            _fsync_write(tmp / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
            if box.exists():
                shutil.rmtree(box)
            os.replace(tmp, box)
            _fsync_dir(self.stage(OUTBOX))
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def outbox_meta(self, study: str) -> dict | None:
        """The meta of the study's report waiting in the outbox, or None."""
        path = self.stage(OUTBOX, study) / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def read_outbox(self, study: str) -> tuple[list[Path], dict]:
        box = self.stage(OUTBOX, study)
        return sorted(box.glob("report-*.dcm")), json.loads((box / "meta.json").read_text())

    def clear_outbox(self, study: str) -> None:
        shutil.rmtree(self.stage(OUTBOX, study), ignore_errors=True)

    def retire(self, study: str, files: list[Path]) -> None:
        """Move this round's instances to done/ and drop the ready marker."""
        dest = self.stage(DONE, study)
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            if f.parent != dest and f.exists():
                os.replace(f, dest / f.name)
        _fsync_dir(dest)
        src = self.stage(INCOMING, study)
        if src.is_dir() and not any(src.iterdir()):
            src.rmdir()
        self.stage(READY, study).unlink(missing_ok=True)

    def backlog(self) -> dict:
        return {
            "incoming": len(self.incoming_studies()),
            "ready": len(self.ready_studies()),
            "unsent": len(self.outbox_studies()),
        }


def build_reports(results: list, artifact, predecessors=None) -> list:
    """The structured report datasets (SR first) for one study's predicted instances;
    ``predecessors`` as ``dicom_out.study_reports`` (the earlier reports this one supersedes)."""
    from mxa_edge.runtime.dicom_out import study_reports

    return study_reports(results, artifact, predecessors=predecessors)


@dataclass
class _Arrivals:
    """Per study being received: the wall time of its last instance, who sent it."""

    last: dict[str, float] = field(default_factory=dict)
    calling_ae: dict[str, str] = field(default_factory=dict)
    by_assoc: dict[int, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Node:
    """The DICOM node: ``run()`` serves until a stop condition (``max_studies``, ``run_seconds``,
    ``stop()``) and returns a summary. ``log`` receives one dict per log line."""

    def __init__(self, predictor, config: NodeConfig, log: Callable[[dict], None] | None = None):
        self.predictor = predictor
        self.config = config
        self.log = log or (lambda record: None)
        self.queue = StudyQueue(config.queue)
        self.queue.lock()
        self.audit = AuditLog(self.queue.root / AUDIT_FILE)
        self.artifact_sha256 = predictor.artifact.manifest.artifact_sha256 or ""
        self.model_id = predictor.model_id
        self._arrivals = _Arrivals()
        self._ready: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._finished = 0
        self._finished_lock = threading.Lock()
        self._next_send = 0.0
        self._delay = config.retry_initial
        self._server = None

    # --- receiving (pynetdicom threads) -------------------------------------------------------

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            study, sop = str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
        except Exception as exc:  # a dataset pydicom cannot parse
            self.log({"level": "warning", "message": f"unreadable dataset refused ({type(exc).__name__}: {exc})"})
            return STATUS_CANNOT_UNDERSTAND
        calling = event.assoc.requestor.ae_title
        if not (_UID.match(study) and _UID.match(sop)) or len(study) > 64 or len(sop) > 64:
            self.log(
                {"level": "warning", "message": f"instance refused from {calling}: invalid UIDs {study!r}/{sop!r}"}
            )
            return STATUS_CANNOT_UNDERSTAND
        try:
            self.queue.store(study, sop, event.encoded_dataset(include_meta=True))
        except OSError as exc:
            self.log({"level": "error", "message": f"cannot queue {sop} ({exc.strerror or exc}): refused"})
            return STATUS_OUT_OF_RESOURCES
        with self._arrivals.lock:
            self._arrivals.last[study] = time.time()
            self._arrivals.calling_ae[study] = calling
            self._arrivals.by_assoc.setdefault(id(event.assoc), set()).add(study)
        self.audit.write("received", calling_ae=calling, study_uid=study, sop_uid=sop)
        return STATUS_SUCCESS

    def _on_association_end(self, event) -> None:
        with self._arrivals.lock:
            studies = self._arrivals.by_assoc.pop(id(event.assoc), set())
        for study in sorted(studies):
            self._complete(study)

    def _complete(self, study: str) -> None:
        with self._arrivals.lock:
            if self._arrivals.last.pop(study, None) is None:
                return
        self.queue.mark_ready(study)
        self._ready.put(study)

    # --- the main loop -------------------------------------------------------------------------

    def run(self) -> dict:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        c = self.config
        started = time.monotonic()
        self._resume()
        ae = AE(ae_title=c.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.require_calling_aet = list(c.allow_ae)
        ae.network_timeout = c.network_timeout
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_association_end),
            (evt.EVT_ABORTED, self._on_association_end),
            (evt.EVT_CONN_CLOSE, self._on_association_end),  # a dropped connection: neither of the above
        ]
        try:
            self._server = ae.start_server((c.host, c.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            self.audit.close()
            self.queue.unlock()
            raise ConfigError(
                f"cannot listen on {c.host}:{c.port} ({exc.strerror or exc}); choose another --port"
            ) from None
        worker = threading.Thread(target=self._work, name="mxa-edge-worker", daemon=True)
        worker.start()
        backlog = self.queue.backlog()
        self.audit.write(
            "started", artifact_sha256=self.artifact_sha256, model_id=self.model_id, destination=str(c.destination)
        )
        self.log(
            {
                "level": "info",
                "event": "started",
                "message": f"{c.ae_title} listening on {c.host}:{c.port} with {self.model_id}; reports to "
                f"{c.destination}; queue {self.queue.root}",
                "backlog": backlog,
            }
        )
        last_status = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if c.run_seconds is not None and now - started >= c.run_seconds:
                    break
                if c.max_studies is not None and self._finished >= c.max_studies:
                    break
                self._idle_check()
                if now - last_status >= c.status_every:
                    self._status()
                    last_status = now
                self._stop.wait(0.1)
        finally:
            self._stop.set()
            self._server.shutdown()
            worker.join(timeout=c.network_timeout + 5)
            summary = {"finished": self._finished, "backlog": self.queue.backlog()}
            self.log(
                {
                    "level": "info",
                    "event": "stopped",
                    "message": f"stopped: {self._finished} studies finished",
                    **summary,
                }
            )
            self.audit.close()
            self.queue.unlock()
        return summary

    def stop(self) -> None:
        self._stop.set()

    def _resume(self) -> None:
        """Everything pending from an earlier run: outbox (sent by the worker), ready studies, and
        incoming studies on the idle clock from their last file's time."""
        ready = set(self.queue.ready_studies())
        for study in sorted(ready):
            self._ready.put(study)
        for study in self.queue.incoming_studies():
            if study not in ready:
                newest = max(p.stat().st_mtime for p in self.queue.stage(INCOMING, study).glob("*.dcm"))
                self._arrivals.last[study] = newest

    def _idle_check(self) -> None:
        deadline = time.time() - self.config.idle_timeout
        with self._arrivals.lock:
            idle = [s for s, t in self._arrivals.last.items() if t <= deadline]
        for study in idle:
            self._complete(study)

    def _status(self) -> None:
        backlog = self.queue.backlog()
        self.log(
            {
                "level": "info",
                "event": "status",
                "message": f"status: {self._finished} finished; backlog "
                f"{backlog['incoming']} receiving, {backlog['ready']} to predict, {backlog['unsent']} to send",
                "finished": self._finished,
                "backlog": backlog,
            }
        )

    # --- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self._deliver_due()
                try:
                    study = self._ready.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._predict_study(study)
                self._deliver_due()
            except Exception as exc:  # keep serving; the study stays in the queue for the next start
                self.log({"level": "error", "message": f"worker: {type(exc).__name__}: {exc}"})
                self._stop.wait(1.0)

    def _predict_study(self, study: str) -> None:
        from mxa_edge.runtime.predict import PredictionError, PredictionSkipped

        new, old = self.queue.instances(study)
        if not new:
            self.queue.stage(READY, study).unlink(missing_ok=True)
            return
        # An instance sent again (an SCU retrying after a crash) replaces its earlier copy: same set, same UIDs.
        by_sop = {p.name: p for p in old} | {p.name: p for p in new}
        files = [by_sop[name] for name in sorted(by_sop)]
        instances = [p.stem for p in files]
        with self._arrivals.lock:
            calling = self._arrivals.calling_ae.pop(study, None)
        ledger = self.queue.ledger(study)["reports"]
        delivered = {uid for entry in ledger for uid in entry.get("sop_uids", [])}
        series, (sr_uid,) = report_uids(study, self.artifact_sha256, instances, 1)  # serve sends the SR only
        if sr_uid in delivered:  # the same instances again (a retrying SCU): this report was delivered
            self.queue.retire(study, new)
            self.audit.write(
                "duplicate",
                calling_ae=calling,
                study_uid=study,
                sop_uid=sr_uid,
                instances=len(instances),
                artifact_sha256=self.artifact_sha256,
                model_id=self.model_id,
            )
            self.log({"level": "info", "event": "duplicate", "message": f"study {study}: already reported ({sr_uid})"})
            self._finish()
            return
        round_no, supersedes = self._round(study, ledger, sr_uid, calling, new, old)
        results = []
        for item in self.predictor.predict_files(files):
            # what every audit line of this instance says: who sent it, which study and round, which model
            about = dict(
                calling_ae=calling,
                study_uid=study,
                sop_uid=Path(item.file).stem,
                round=round_no,
                artifact_sha256=self.artifact_sha256,
                model_id=self.model_id,
            )
            if isinstance(item, (PredictionSkipped, PredictionError)):
                reason = item.reason if isinstance(item, PredictionSkipped) else item.problem
                self.audit.write("skipped", **about, reason=reason)
                continue
            results.append(item)
            self.audit.write(
                "predicted",
                **about,
                in_distribution=item.in_distribution,
                ood_score=item.ood_score,
                positives=list(item.positives),
                probabilities=dict(item.probabilities),
                thresholds=dict(item.thresholds),
            )
        last_received = max(p.stat().st_mtime for p in new)
        if not results:
            self.queue.clear_outbox(study)  # an unsent earlier round of the study is superseded too
            self.queue.record_sent(
                study,
                {
                    "time": utc_now(),
                    "round": round_no,
                    "sop_uids": [],
                    "instances": instances,
                    "reason": "no frontal chest radiograph in the study",
                },
            )
            self.queue.retire(study, new)
            self.log({"level": "info", "event": "skipped", "message": f"study {study}: nothing to predict"})
            self._finish()
            return
        predecessors = [(e["series_uid"], e["sop_class_uid"], e["sop_uids"][0]) for e in supersedes]
        datasets = build_reports(results, self.predictor.artifact, predecessors)
        series, uids = report_uids(study, self.artifact_sha256, instances, len(datasets))
        for ds, uid in zip(datasets, uids):
            ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = uid, series, round_no
        extra, bundle_id = {}, None
        if self.config.fhir is not None:
            from mxa_edge.runtime.fhir_out import bundle_bytes, study_bundle

            bundle = study_bundle(results, self.predictor.artifact)
            extra[FHIR_FILE], bundle_id = bundle_bytes(bundle), bundle["id"]
        meta = {
            "study_uid": study,
            "round": round_no,
            "series_uid": series,
            "sop_class_uid": str(datasets[0].SOPClassUID),
            "sop_uids": uids,
            "supersedes": [e["sop_uids"][0] for e in supersedes],
            "instances": instances,
            "last_received": last_received,
            "calling_ae": calling,
            "fhir_bundle": bundle_id,
        }
        self.queue.write_outbox(study, datasets, meta, extra)
        self.queue.retire(study, new)

    def _round(self, study: str, ledger: list[dict], sr_uid: str, calling, new, old) -> tuple[int, list[dict]]:
        """(this report's round, the delivered reports it supersedes). Round 1 is the study's first
        report; an instance arriving after a report was made starts the next round: a report of the
        whole study (earlier instances predicted again) with UIDs of its own, naming the delivered
        reports it supersedes, and an audit event ``new_round``. Re-predicting the same round after
        a crash gives the same number; an unsent report of an earlier round is replaced in the outbox."""
        rounds = [entry.get("round", i + 1) for i, entry in enumerate(ledger)]
        # Delivered SRs (a ledger from before rounds were recorded lacks their series: not referenced).
        supersedes = [e for e in ledger if e.get("sop_uids") and e.get("series_uid") and e.get("sop_class_uid")]
        unsent = self.queue.outbox_meta(study)
        if unsent is not None and sr_uid in unsent.get("sop_uids", []):
            return unsent.get("round", 1), supersedes
        if unsent is not None:
            rounds.append(unsent.get("round", len(ledger) + 1))
        round_no = max(rounds, default=0) + 1
        if round_no > 1:
            earlier = {p.name for p in old}
            self.audit.write(
                "new_round",
                calling_ae=calling,
                study_uid=study,
                round=round_no,
                new_instances=sorted(p.stem for p in new if p.name not in earlier),
                instances=len(earlier | {p.name for p in new}),
                supersedes=[e["sop_uids"][0] for e in supersedes],
                superseded_unsent=unsent["sop_uids"] if unsent is not None else None,
                artifact_sha256=self.artifact_sha256,
                model_id=self.model_id,
            )
            self.log(
                {
                    "level": "info",
                    "event": "new_round",
                    "message": f"study {study}: instance(s) after its report: round {round_no}, a new report "
                    f"of the whole study superseding {len(supersedes)} delivered report(s)",
                }
            )
        return round_no, supersedes

    def _finish(self) -> None:
        with self._finished_lock:
            self._finished += 1

    def _deliver_due(self) -> None:
        if time.monotonic() < self._next_send:
            return
        for study in self.queue.outbox_studies():
            if self._stop.is_set():
                return
            try:
                self._deliver(study)
            except SendError as exc:
                self._next_send = time.monotonic() + self._delay
                unsent = len(self.queue.outbox_studies())
                self.audit.write(
                    "send_failed",
                    study_uid=study,
                    destination=str(self.config.destination),
                    reason=str(exc),
                    artifact_sha256=self.artifact_sha256,
                    model_id=self.model_id,
                )
                self.log(
                    {
                        "level": "warning",
                        "event": "send_failed",
                        "message": f"{exc}; retry in {self._delay:.1f} s; {unsent} report(s) waiting",
                        "unsent": unsent,
                    }
                )
                self._delay = min(self._delay * 2, self.config.retry_cap)
                return
        self._delay = self.config.retry_initial

    def _deliver(self, study: str) -> None:
        paths, meta = self.queue.read_outbox(study)
        already = {uid for entry in self.queue.ledger(study)["reports"] for uid in entry.get("sop_uids", [])}
        todo = [(p, uid) for p, uid in zip(paths, meta["sop_uids"]) if uid not in already]
        if todo:
            fhir = None
            if self.config.fhir is not None and meta.get("fhir_bundle"):
                # Before the SR: written again (same name, same bytes) if the SR's delivery is retried.
                fhir = self.config.fhir / f"{meta['fhir_bundle']}.json"
                _fsync_write(fhir, (self.queue.stage(OUTBOX, study) / FHIR_FILE).read_bytes())
            if self.config.destination.folder is not None:
                for p, uid in todo:
                    _fsync_write(self.config.destination.folder / f"{uid}.dcm", p.read_bytes())
            else:
                self._c_store([p for p, _ in todo])
            self.queue.record_sent(
                study,
                {
                    "time": utc_now(),
                    "round": meta.get("round", 1),
                    "sop_uids": [u for _, u in todo],
                    "series_uid": meta.get("series_uid"),
                    "sop_class_uid": meta.get("sop_class_uid"),
                    "instances": meta["instances"],
                    "destination": str(self.config.destination),
                },
            )
            latency = time.time() - meta["last_received"]
            self.audit.write(
                "sent",
                calling_ae=meta.get("calling_ae"),
                study_uid=study,
                sop_uid=todo[0][1],
                round=meta.get("round", 1),
                supersedes=meta.get("supersedes") or None,
                artifact_sha256=self.artifact_sha256,
                model_id=self.model_id,
                destination=str(self.config.destination),
                fhir=str(fhir) if fhir is not None else None,
                latency_s=round(latency, 3),
            )
            self.log(
                {
                    "level": "info",
                    "event": "sent",
                    "message": f"study {study}: report {todo[0][1]} sent to "
                    f"{self.config.destination} ({latency:.1f} s after its last instance)",
                }
            )
        self.queue.clear_outbox(study)
        self._finish()

    def _c_store(self, paths: list[Path]) -> None:
        import pydicom
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        d = self.config.destination
        datasets = [pydicom.dcmread(p) for p in paths]
        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.network_timeout
        ae.connection_timeout = min(10.0, self.config.network_timeout)
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        if not assoc.is_established:
            raise SendError(f"cannot associate with {d} (down, or it refused {self.config.ae_title})")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None or not (code == 0 or 0xB000 <= code <= 0xBFFF):
                    raise SendError(
                        f"{d} did not store {ds.SOPInstanceUID} (status {code if code is None else hex(code)})"
                    )
        finally:
            if assoc.is_established:
                assoc.release()
