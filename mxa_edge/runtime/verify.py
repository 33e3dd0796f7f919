"""``mxa-edge verify``: does this machine reproduce what the drift gate checked? (torch-free)

The gate ran on the build machine. A deployment CPU may run other kernels (VNNI or AVX2 int8
GEMMs, bf16 or f32) and so other numbers. Every artifact therefore carries *golden vectors*:
a few preprocessed held-out images (``golden/images.npy``, uint8 at the model's resolution;
the manifest's preprocess turns them into the exact model input), the exported model's logits
on them measured at gate time, and the FP32 model's. ``verify_artifact`` runs the images
through the local runtime and compares with the recorded exported logits:

    PASS  when max |Δlogit| <= tolerance, where tolerance = max(MIN_TOLERANCE,
          TOLERANCE_FRACTION x max |exported - FP32| at gate time): the machine may differ from
          the gate machine by at most a fraction of the quantization error the gate accepted.

The input guard's scores on the same images are checked the same way (``guard``: max |Δscore|
against max(1% of the largest recorded score, 0.5 x the gate-time exported-vs-FP32 gap)).
It also reports decision agreement at the manifest thresholds, the machine's ISA and the
precision the runtime really executes (read back after compile). ``predict`` runs it once per
artifact and machine (``ensure_verified``, cached by a machine fingerprint).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mxa_edge.data.arrays import to_model_range
from mxa_edge.decision.guard import FEATURES_OUTPUT, load_guard
from mxa_edge.formats.naming import GOLDEN_DIR, GOLDEN_FILES
from mxa_edge.formats.records import GoldenGuardScores, GoldenRecord, LogitTolerance
from mxa_edge.runtime.engines import open_engine
from mxa_edge.support.errors import ArtifactError, VerificationError
from mxa_edge.support.fileio import sha256_file, write_json
from mxa_edge.support.machine import VNNI_CLASSES, int8_kernel_class, isa_line, machine_fingerprint
from mxa_edge.support.paths import cache_dir

GOLDEN_N = 16
MIN_TOLERANCE = 0.05  # logits; FP32 exports differ across CPUs by ~1e-4
TOLERANCE_FRACTION = 0.5
GUARD_MIN_RELATIVE = 0.01  # input-guard scores: at least 1% of the largest recorded score


def golden_indices(n_images: int, n: int = GOLDEN_N) -> np.ndarray:
    """Evenly spaced rows of the held-out split (deterministic; spans the CSV, not its head)."""
    return np.unique(np.linspace(0, n_images - 1, min(n, n_images)).round().astype(int))


def write_golden(
    folder: Path,
    images_u8: np.ndarray,
    exported: np.ndarray,
    fp32: np.ndarray,
    guard_scores: tuple | None = None,
    **recorded,
) -> GoldenRecord:
    """Save the golden vectors into ``folder/golden`` and return the manifest's ``verification``
    record (file hashes, tolerance, and ``recorded`` facts: the GoldenRecord fields naming the
    gate machine, ``gate_machine``, ``gate_isa``, ``gated_runtime``, ``executed_precision``).
    ``guard_scores``: (exported, FP32) input-guard scores of the same images, recorded with
    their own tolerance (same rule, relative to the gate-time gap)."""
    (Path(folder) / GOLDEN_DIR).mkdir(exist_ok=True)
    arrays = {"images": np.ascontiguousarray(images_u8, np.uint8), "exported": exported, "fp32": fp32}
    for key, rel in GOLDEN_FILES.items():
        np.save(Path(folder) / rel, arrays[key] if key == "images" else np.asarray(arrays[key], np.float32))
    gap = float(np.abs(np.asarray(exported, np.float64) - np.asarray(fp32, np.float64)).max())
    return GoldenRecord(
        n=int(len(images_u8)),
        files={rel: sha256_file(Path(folder) / rel) for rel in GOLDEN_FILES.values()},
        max_abs_logit_exported_vs_fp32=gap,
        tolerance=LogitTolerance(max_abs_logit=max(MIN_TOLERANCE, TOLERANCE_FRACTION * gap)),
        rule=(
            f"max |logit - recorded exported logit| <= "
            f"max({MIN_TOLERANCE}, {TOLERANCE_FRACTION} x max |exported - FP32|)"
        ),
        guard=_guard_record(*guard_scores) if guard_scores is not None else None,
        **recorded,
    )


def _guard_record(exported, fp32) -> GoldenGuardScores:
    exported, fp32 = np.asarray(exported, np.float64), np.asarray(fp32, np.float64)
    gap = float(np.abs(exported - fp32).max()) if exported.size else 0.0
    # Relative floor: guard scores are distances (about 1 for a typical image in a fused guard,
    # ~sqrt(D) in a guard of the features alone); an FP32 artifact moves them by ~1e-4 relative
    # across CPUs.
    floor = GUARD_MIN_RELATIVE * float(np.abs(exported).max()) if exported.size else 0.0
    return GoldenGuardScores(
        scores_exported=[float(v) for v in exported],
        scores_fp32=[float(v) for v in fp32],
        tolerance=max(floor, TOLERANCE_FRACTION * gap),
    )


@dataclass
class VerifyReport:
    artifact: str
    passed: bool
    n_images: int
    max_abs_logit: float | None
    tolerance: float | None
    decision_agreement: float | None  # fraction of (image, finding) decisions equal to the recorded ones
    flipped: list = field(default_factory=list)  # [(image index, finding)] whose decision changed
    isa: str = ""
    machine: dict = field(default_factory=dict)
    executed_precision: str | None = None
    recorded: dict = field(default_factory=dict)  # gate machine and its executed precision
    reason: str | None = None
    guard: dict | None = None  # input-guard scores vs the recorded ones (max |Δ|, tolerance, flag agreement)
    int8_kernels: str = ""  # this CPU's INT8 kernel class (machine.int8_kernel_class)
    checked_on: dict = field(default_factory=dict)  # class -> how the export checked it (manifest)
    class_checked_at_export: bool | None = None  # None: the artifact predates the record
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_golden(artifact) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images u8, recorded exported logits, FP32 logits), each file checked against its hash."""
    rec = artifact.manifest.verification
    if rec is None:
        raise ArtifactError(f"{artifact.path}: carries no golden vectors; re-export it with this version")
    out = []
    for rel in GOLDEN_FILES.values():
        path = artifact.member(rel)  # listed and hash-checked by load_artifact
        if sha256_file(path) != rec.files.get(rel):
            raise ArtifactError(f"{path}: missing or changed since export; the artifact is incomplete or edited")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:  # e.g. an object array: never unpickled
            raise ArtifactError(f"{path}: not a plain numeric array ({str(exc).splitlines()[0]})") from None
        if array.dtype.kind not in "uif":
            raise ArtifactError(f"{path}: holds {array.dtype} values, not numbers; the artifact was edited")
        out.append(array)
    return tuple(out)


def verify_artifact(artifact, engine=None, threads: int | None = None) -> VerifyReport:
    """Run the golden vectors through this machine's runtime (``engine``, or one opened here)."""

    images, recorded, _ = load_golden(artifact)
    rec = artifact.manifest.verification
    report = VerifyReport(
        artifact=str(artifact.path),
        passed=False,
        n_images=int(len(images)),
        max_abs_logit=None,
        tolerance=float(rec.tolerance.max_abs_logit),
        decision_agreement=None,
        isa=isa_line(),
        machine=machine_fingerprint(),
        recorded={
            "gate_machine": rec.gate_machine,
            "gate_isa": rec.gate_isa,
            "executed_precision": rec.executed_precision,
            "gated_runtime": rec.gated_runtime,
            "gated_with": artifact.manifest.export.gated_with or rec.gated_runtime,
        },
    )
    _kernel_class_note(report, rec)
    engine = engine or open_engine(artifact, threads)
    report.executed_precision = engine.describe()
    x = to_model_range(images, artifact.preprocess)
    outputs = engine.run(x)
    logits = np.asarray(outputs["logits"], np.float64)
    guard = None
    if rec.guard is not None and artifact.manifest.guard is not None:
        guard = load_guard(artifact)
        scores = guard.score(outputs[FEATURES_OUTPUT], x)
    gaps = golden_gaps(logits, scores if guard is not None else None, recorded, rec)
    report.max_abs_logit = gaps["max_abs_logit"]
    rule = artifact.decision  # the calibration and thresholds predict applies
    now, then = rule.decisions(rule.probabilities(logits)), rule.decisions(rule.probabilities(recorded))
    report.decision_agreement = float((now == then).mean())
    report.flipped = [(int(i), artifact.labels[j]) for i, j in zip(*np.nonzero(now != then))]
    report.passed = report.max_abs_logit <= report.tolerance
    if not report.passed:
        report.reason = (
            f"max |Δlogit| {report.max_abs_logit:.4f} > tolerance {report.tolerance:.4f} on {report.n_images} "
            f"golden images ({len(report.flipped)} decisions changed)"
        )
    if not report.passed and rec.checked_on is not None and rec.checked_on.int8_scheme == "vnni":
        if report.int8_kernels not in VNNI_CLASSES:
            report.reason += (
                f"; the artifact was exported with --int8-scheme vnni (full-range int8 weights), whose 16-bit "
                f"sums saturate on this CPU's {report.int8_kernels} INT8 kernels: re-export with --int8-scheme portable"
            )
    if guard is not None:
        gap, tolerance = gaps["max_abs_guard_score"], gaps["guard_tolerance"]
        recorded_scores = np.asarray(rec.guard.scores_exported, np.float64)
        flags_now, flags_then = scores > guard.threshold, recorded_scores > guard.threshold
        report.guard = {
            "max_abs_score": gap,
            "tolerance": tolerance,
            "flag_agreement": float((flags_now == flags_then).mean()),
            "threshold": guard.threshold,
        }
        if gap > tolerance:
            report.passed = False
            why = f"input-guard score differs by {gap:.4f} > tolerance {tolerance:.4f} on the golden images"
            report.reason = f"{report.reason}; {why}" if report.reason else why
    return report


def golden_gaps(logits, guard_scores, recorded_logits, rec: GoldenRecord) -> dict:
    """How far outputs on the golden images are from what the gate recorded, against the
    manifest's tolerances (``rec``: its ``verification`` record): max |Δlogit|, max |Δ guard
    score| when both sides have one, and whether both are within tolerance. The one rule for
    ``verify`` on a deployment CPU and for export's check on the other CPU class."""
    out = {
        "max_abs_logit": float(np.abs(np.asarray(logits, np.float64) - np.asarray(recorded_logits, np.float64)).max()),
        "tolerance": float(rec.tolerance.max_abs_logit),
    }
    out["passed"] = out["max_abs_logit"] <= out["tolerance"]
    if rec.guard is not None and guard_scores is not None:
        recorded = np.asarray(rec.guard.scores_exported, np.float64)
        out["max_abs_guard_score"] = float(np.abs(np.asarray(guard_scores, np.float64) - recorded).max())
        out["guard_tolerance"] = float(rec.guard.tolerance)
        out["passed"] = out["passed"] and out["max_abs_guard_score"] <= out["guard_tolerance"]
    return out


def _kernel_class_note(report: VerifyReport, rec: GoldenRecord) -> None:
    """Which CPU classes the export checked, and whether this one is among them (it is checked
    here either way: that is what verify is for)."""

    report.int8_kernels = int8_kernel_class()
    checked = rec.checked_on
    if checked is None:
        report.note = "the artifact records no CPU classes (exported before they were recorded)"
        return
    report.checked_on = checked.classes
    done = checked.checked()
    report.class_checked_at_export = report.int8_kernels in done
    if not report.class_checked_at_export:
        report.note = (
            f"this CPU's INT8 kernels ({report.int8_kernels}) were not checked at export (checked: "
            f"{', '.join(done) or 'none'}); checking them now"
        )


def _stamp(artifact) -> Path:

    return cache_dir() / "verified" / f"{artifact.manifest.artifact_sha256[:24]}-{machine_fingerprint()['id']}.json"


def ensure_verified(artifact, engine) -> VerifyReport | None:
    """Verify on first use on this machine (cached by artifact digest and machine fingerprint);
    raises VerificationError when the machine does not reproduce the gated outputs. Returns the
    report when it ran now, None when a cached PASS was found."""
    stamp = _stamp(artifact)
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("passed"):
                return None
        except (OSError, ValueError):
            pass
    report = verify_artifact(artifact, engine)
    if not report.passed:
        raise VerificationError(
            f"{artifact.path}: this machine ({report.isa}) does not reproduce the outputs the drift gate checked: "
            f"{report.reason}; run `mxa-edge verify {artifact.path}` for details (--no-verify overrides)"
        )
    try:
        write_json(stamp, report.to_dict())
    except OSError:  # a read-only cache: verify again next time
        pass
    return report
