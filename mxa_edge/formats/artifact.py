"""``ArtifactManifest`` and ``load_artifact``: an exported artifact folder, typed, versioned and
verified (numpy/stdlib only: this is on the light runtime path).

    ARTIFACT/
      manifest.json   format, labels, decision (calibration, thresholds), preprocess, precision,
                      files {name: sha256}, ...
      model file(s)   model.onnx / model.int8.onnx / model.xml + model.bin / model.qdq.onnx
      drift.json      the drift gate's table; drift.png its plot
      guard.npz       the input guard; golden/ the golden vectors of ``mxa-edge verify``
      model.sig       optional: a model-signing signature over all of the above (provenance.py)

``files`` lists EVERY file of the folder (the manifest and the signature aside) with its
SHA-256, checked BEFORE anything loads: a truncated copy, a swapped model or an edited drift
record is refused instead of silently giving other predictions or another sign-off table.
Every path the manifest names is read through ``Artifact.member``: listed, hashed, inside.

The drift gate's verdict travels with the artifact: ``load_artifact`` refuses one whose gate
did not pass (or that has no verdict) unless the caller explicitly allows it, and checks the
signature against the site's trusted keys when any are configured.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from mxa_edge.formats import naming
from mxa_edge.formats.decision import DecisionRule
from mxa_edge.formats.model_spec import ModelSpec
from mxa_edge.formats.precision import NumericFormat, Precision
from mxa_edge.formats.provenance import SIGNATURE_FILE, check_provenance
from mxa_edge.formats.records import (
    OMIT_NONE,
    CalibrationRecord,
    ExportSettings,
    GoldenRecord,
    GuardRecord,
    QatRecord,
    QuantizationRecord,
    Record,
)
from mxa_edge.formats.run import check_header, read_manifest_json
from mxa_edge.formats.selection import DataSelection
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ArtifactError
from mxa_edge.support.fileio import previous_path, read_json, sha256_file, write_json

# 2: the manifest carries ``artifact_sha256``, its own digest (version 1 had none and cannot be
# checked for edits, so it is refused rather than trusted).
# 3: ``decision`` (calibration + per-finding operating points, fitted on the run's tuning split)
# replaces the flat ``thresholds``, and drift.json is gate v2 on the held-out split.
# 4: the graph has a ``features`` output and the artifact an input guard (``guard``, guard.npz).
# 5: ``files`` covers every file (drift.json, drift.png, guard, golden vectors): version 4 left
# the drift record and the guard outside the digest, so it is refused.
ARTIFACT_FORMAT_VERSION = 5
DIGEST_FIELD = "artifact_sha256"


def manifest_digest(manifest: dict) -> str:
    """THE artifact digest: sha256 of the manifest's canonical JSON without this field. The
    manifest lists every model file's sha256, so the digest covers the files too: editing a
    threshold, the preprocessing or a hash changes it."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class SourceRun(Record):
    """The training run an artifact was exported from."""

    path: str | None = None
    weights_sha256: str | None = None
    data_fingerprint: dict[str, str] = field(default_factory=dict)  # split -> fingerprint
    # the run's data policy (absent in artifacts before it was copied)
    data: DataSelection | None = field(default=None, metadata=OMIT_NONE)

    def selection(self) -> DataSelection | None:
        """The data policy the artifact was gated with: its own copy, else the source run's (when
        that run folder is on this machine)."""
        if self.data is not None:
            return self.data
        if self.path and naming.is_run(self.path):
            from mxa_edge.formats.run import RunRecord

            try:
                return RunRecord.load(self.path).data
            except ArtifactError:
                return None
        return None


@dataclass
class ArtifactManifest:
    model_id: str
    runtime: str  # which engine runs the entry file: onnxruntime / openvino / tensorrt (backend registry)
    entry: str  # the model file the engine opens
    files: dict  # name -> sha256 of every model file
    preprocess: Preprocess
    precision: NumericFormat
    model: ModelSpec
    outputs: list = field(default_factory=lambda: ["logits"])
    inputs: list = field(default_factory=lambda: ["image"])
    decision: DecisionRule = field(default_factory=DecisionRule.uncalibrated)
    guard: GuardRecord | None = (
        None  # the input guard (mxa_edge.decision.guard): threshold, method, its file, flag rates
    )
    quantization: QuantizationRecord | None = None  # INT8: the tool's settings
    qat: QatRecord | None = None  # quantization-aware fine-tuning
    calibration: CalibrationRecord | None = None  # INT8: the calibration images
    source_run: SourceRun = field(default_factory=SourceRun)
    flops: int | None = None
    macs: int | None = None
    params: int | None = None
    drift: dict | None = None  # the gate's summary (drift.json has the full table)
    export: ExportSettings = field(default_factory=ExportSettings)  # target, onnx_opset, static_batch, notes
    verification: GoldenRecord | None = None  # golden vectors for ``mxa-edge verify`` (runtime/verify.py)
    versions: dict = field(default_factory=dict)
    created: str | None = None
    artifact_sha256: str | None = None  # set by save(); checked by load_artifact

    @property
    def labels(self) -> tuple[str, ...]:
        return CHEXPERT_LABELS

    @property
    def target(self) -> str:
        """The export target (backend registry name)."""
        return self.export.target

    @property
    def export_precision(self) -> Precision:
        return self.precision.precision(qat=self.qat is not None)

    @property
    def static_batch(self) -> int | None:
        return self.export.static_batch

    def to_dict(self) -> dict:
        return {
            "format": naming.ARTIFACT_FORMAT,
            "format_version": ARTIFACT_FORMAT_VERSION,
            "model_id": self.model_id,
            "backend": self.runtime,
            "entry": self.entry,
            "files": dict(self.files),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "labels": list(CHEXPERT_LABELS),
            "decision": self.decision.to_dict(),
            "guard": self.guard.to_dict() if self.guard is not None else None,
            "preprocess": self.preprocess.to_dict(),
            "precision": self.precision.to_dict(),
            "quantization": self.quantization.to_dict() if self.quantization is not None else None,
            "qat": self.qat.to_dict() if self.qat is not None else None,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "source_run": self.source_run.to_dict(),
            "model": self.model.to_dict(),
            # FP32 model at batch 1, torch FlopCounterMode: conv/linear/matmul only, 2 FLOPs per MAC.
            "flops": self.flops,
            "macs": self.macs,
            "params": self.params,
            "drift": self.drift,
            "export": self.export.to_dict(),
            "verification": self.verification.to_dict() if self.verification is not None else None,
            "versions": self.versions,
            "created": self.created,
            **({DIGEST_FIELD: self.artifact_sha256} if self.artifact_sha256 else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, where="manifest") -> ArtifactManifest:
        try:
            export = ExportSettings.from_dict(d.get("export") or {})
            export.target = export.target or d["backend"]
            return cls(
                model_id=d["model_id"],
                runtime=d["backend"],
                entry=d["entry"],
                files=dict(d.get("files") or {}),
                preprocess=Preprocess.from_dict(d["preprocess"]),
                precision=NumericFormat.from_dict(d.get("precision")),
                model=ModelSpec.from_dict(d["model"]),
                outputs=list(d.get("outputs") or ["logits"]),
                inputs=list(d.get("inputs") or ["image"]),
                decision=DecisionRule.from_dict(d.get("decision")),
                guard=GuardRecord.optional(d.get("guard")),
                quantization=_read_section(QuantizationRecord, d.get("quantization")),
                qat=_read_section(QatRecord, d.get("qat")),
                calibration=_read_section(CalibrationRecord, d.get("calibration")),
                source_run=SourceRun.from_dict(d.get("source_run") or {}),
                flops=d.get("flops"),
                macs=d.get("macs"),
                params=d.get("params"),
                drift=d.get("drift"),
                export=export,
                verification=GoldenRecord.optional(d.get("verification")),
                versions=dict(d.get("versions") or {}),
                created=d.get("created"),
                artifact_sha256=d.get(DIGEST_FIELD),
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{where}: malformed artifact manifest ({type(exc).__name__}: {exc})") from None

    def save(self, folder) -> None:
        """List every file in ``folder`` (but the manifest and a signature) in ``files`` and
        write manifest.json with its digest (``manifest_digest``). Call it last: a file
        written after it is not covered, and ``load_artifact`` never reads an unlisted file."""
        self.files = hash_folder(folder)
        if self.entry not in self.files:
            raise ArtifactError(f"{folder}: the entry file {self.entry!r} was not written")
        d = self.to_dict()
        d.pop(DIGEST_FIELD, None)
        self.artifact_sha256 = manifest_digest(d)
        write_json(Path(folder) / naming.MANIFEST, {**d, DIGEST_FIELD: self.artifact_sha256})


def _read_section(cls, d):
    """A section that is null (or absent) when the export had none; ``{}`` reads back as ``{}``."""
    return cls.from_dict(d) if d is not None else None


def hash_folder(folder) -> dict[str, str]:
    """{relative posix path: sha256} of every regular file under ``folder``, except the
    manifest and the signature (which signs the rest)."""

    folder = Path(folder)
    out = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).as_posix()
        if rel in (naming.MANIFEST, SIGNATURE_FILE) or f.is_dir():
            continue
        if f.is_symlink() or not f.is_file():
            raise ArtifactError(f"{f}: not a regular file; an artifact holds regular files only")
        out[rel] = sha256_file(f)
    return out


class RejectedArtifactError(ArtifactError):
    """The artifact's drift gate did not pass (or it records no verdict): not for use."""

    exit_code = 9


@dataclass
class Artifact:
    """A verified artifact folder."""

    path: Path
    manifest: ArtifactManifest
    provenance: object = None  # provenance.Provenance: who signed it, and whether that was checked
    allowed_rejected: bool = False  # loaded with allow_rejected although the gate did not pass

    @property
    def gate_passed(self) -> bool:
        return bool((self.manifest.drift or {}).get("passed"))

    def gate_failures(self) -> list[str]:
        """The gate's reasons (one line each), or why there is no verdict."""
        drift = self.manifest.drift
        if not isinstance(drift, dict) or "passed" not in drift:
            return ["no drift-gate verdict recorded"]
        return [str(r) for r in drift.get("reasons") or []] or ([] if drift["passed"] else ["gate failed"])

    def gate_line(self) -> str:
        """ "passed", or the loud line every output of an allowed rejected artifact carries."""
        if self.gate_passed:
            return "passed"
        failures = self.gate_failures()
        shown = "; ".join(failures[:3]) + (f"; {len(failures) - 3} more" if len(failures) > 3 else "")
        return f"REJECTED by the drift gate, used with --allow-rejected: {shown}"

    def member(self, name: str) -> Path:
        """The path of a file the manifest names, only if it is one of the hashed files (so it
        is inside the folder and was checked by ``load_artifact``)."""
        if not isinstance(name, str) or name not in self.manifest.files:
            raise ArtifactError(
                f"{self.manifest_path}: names {name!r}, which is not among its hashed files; the manifest was edited"
            )
        return self.path / name

    @property
    def labels(self) -> tuple[str, ...]:
        return CHEXPERT_LABELS

    @property
    def preprocess(self) -> Preprocess:
        return self.manifest.preprocess

    @property
    def decision(self) -> DecisionRule:
        return self.manifest.decision

    @property
    def thresholds(self) -> dict[str, float]:
        t = self.manifest.decision.thresholds
        return {label: float(t.get(label, 0.5)) for label in self.labels}

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    @property
    def entry(self) -> Path:
        return self.path / self.manifest.entry

    @property
    def precision(self) -> NumericFormat:
        return self.manifest.precision

    @property
    def outputs(self) -> list[str]:
        return list(self.manifest.outputs)

    @property
    def manifest_path(self) -> Path:
        return self.path / naming.MANIFEST

    def drift_table(self) -> dict | None:
        """drift.json's table (the export-time gate, hash-checked), or None when the artifact has none."""
        if naming.DRIFT not in self.manifest.files:
            return None
        path = self.member(naming.DRIFT)
        try:
            table = read_json(path)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable drift record ({exc})") from None
        if not isinstance(table, dict) or not isinstance(table.get("per_label"), dict):
            raise ArtifactError(f"{path}: not a drift table (no per_label section)")
        return table


def load_artifact(path, *, allow_rejected: bool = False, trust=None) -> Artifact:
    """Read ``path/manifest.json``, verify every listed file, check the signature against the
    trusted keys (``trust``: public key paths; None: ``MXA_EDGE_TRUST``; () : none) and the
    drift gate's verdict. Raises ArtifactError (UntrustedArtifactError, RejectedArtifactError).

    ``allow_rejected``: return an artifact whose gate failed (for investigating it); the
    caller must then say so on every result (``Artifact.gate_line``)."""

    path = Path(path)
    previous = previous_path(path)
    if not path.exists() and previous.is_dir():
        raise ArtifactError(
            f"{path}: missing: replacing it was interrupted, and the previous artifact is complete at {previous} "
            "(export again, or rename that folder back)"
        )
    hint = " (the export failed its drift gate)" if path.name.endswith(naming.REJECTED_SUFFIX) else ""
    mpath, raw = read_manifest_json(
        path, f"not an mxa-edge artifact, no {naming.MANIFEST}{hint}; pass the folder `mxa-edge export` wrote"
    )
    check_header(raw, mpath, naming.ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION, "an exported artifact")
    if raw.get(DIGEST_FIELD) != manifest_digest(raw):
        raise ArtifactError(
            f"{mpath}: changed after export ({DIGEST_FIELD} does not match its content): thresholds, "
            "preprocessing and file hashes can no longer be trusted; re-export the model"
        )
    manifest = ArtifactManifest.from_dict(raw, mpath)
    if manifest.entry not in manifest.files:
        raise ArtifactError(f"{mpath}: entry {manifest.entry!r} is not among the hashed files")
    for name, expected in manifest.files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{mpath}: file name {name!r} points outside the artifact")
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"{f}: missing; the artifact is incomplete (copy the whole folder)")
        if sha256_file(f) != expected:
            raise ArtifactError(f"{f}: SHA-256 differs from the manifest; the file was changed or is incomplete")
    artifact = Artifact(path, manifest, provenance=check_provenance(path, trust))
    if not artifact.gate_passed:
        if not allow_rejected:
            failures = artifact.gate_failures()
            shown = "; ".join(failures[:4]) + (f"; {len(failures) - 4} more" if len(failures) > 4 else "")
            raise RejectedArtifactError(
                f"{path}: its drift gate did not pass ({shown}); not for use. "
                "--allow-rejected loads it for investigation, marked on every result"
            )
        artifact.allowed_rejected = True
    return artifact
