"""export_run: run folder -> verified, drift-gated artifact folder. The story, in order:

1. ``_load``: the run (weights hash checked), fused Conv+BN (checked against the unfused model);
2. ``_quantization_plan`` (INT8): the calibration set (also QAT's range initialisation) and, for
   PTQ, the label-free sensitivity analysis that picks the few layers kept in float;
3. ``_reference``: the held-out split (the run's ``valid.csv``, read by its ``DataSelection``;
   nothing is fitted on it), its subgroup slices, and the FP32 model's calibrated probabilities
   on it (the run's ``DecisionRule``, fitted on the tuning split);
   ``_fit_input_guard``: the input guard (``mxa_edge.decision.guard``: Mahalanobis distances of the
   pooled features and of the image statistics, fused; means/covariances from training images,
   scales and threshold from the tuning split) and
   ``_challenge_inputs``: images it must flag (laterals, inverted films, textures, documents);
4. ``_write_model``: the target's exporter writes its model file(s) into a hidden temporary
   folder; with ``qat`` the fake-quantized model is first fine-tuned on the TRAIN split,
   distilled from the FP32 model (``qat.py``), and exported as is; ``--static-batch`` fixes the
   batch in the file;
5. ``_gate``: FP32 PyTorch vs the exported model through the runtime engine, both calibrated and
   thresholded by the run's decision rule, judged by ``mxa_edge.decision.gate`` (gate v2: AUC, sensitivity,
   specificity, agreement, ECE, the input guard's flag rate; subgroups), plus the guard's flag
   rate on every challenge kind through the exported engine; a target with accuracy control (OpenVINO)
   re-quantizes a failing PTQ INT8 once with the gate's own score in the loop, computed on the
   run's TUNING split, and is then gated again on the held-out split;
6. ``_records``: drift.json, drift.png and the ``ArtifactManifest``;
7. ``_publish``: the temporary folder is renamed to the requested name only when the gate
   passes. A failing export is kept as ``<name>.rejected/`` (replacing an older one) for
   inspection, never under the requested name, and DriftGateError is raised. Only folders this
   tool wrote are replaced (a user's folder, a file or a run is refused before any work), and
   replacing is crash-safe: a kill at any point leaves one complete artifact.

Every target-specific choice comes from its ``BackendSpec`` (``mxa_edge.backends``). Steps 1-3
build the one ``_Export`` context (``_prepare``: the request, the loaded run, the exporter and its
options, the folders, the references, the guard and its challenge images, ``say``) that every later
step reads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mxa_edge import backends
from mxa_edge.backends import BackendOutput, BackendSpec, ExportOptions
from mxa_edge.data.ood import generated_challenge, held_out_laterals
from mxa_edge.data.subgroups import subgroup_rows
from mxa_edge.decision import drift
from mxa_edge.decision.gate import DEFAULT_GATE, GateSpec
from mxa_edge.decision.guard import (
    FEATURES_OUTPUT,
    IMAGE_STATISTICS,
    MAX_FIT_IMAGES,
    fit_guard,
    flag_rate,
    guard_drift,
    image_statistics,
    with_image_statistics,
)
from mxa_edge.decision.scoring import engine_runner, score
from mxa_edge.formats import ArtifactManifest, Int8Scheme, Precision, RunRecord, SourceRun, naming
from mxa_edge.formats.provenance import sign_folder, signing_key_fingerprint
from mxa_edge.formats.records import (
    ExportSettings,
    GoldenRecord,
    KernelClassChecks,
    MixedPrecisionRecord,
    QuantizationRecord,
)
from mxa_edge.runtime.engines import open_model_file
from mxa_edge.runtime.verify import golden_indices, write_golden
from mxa_edge.support.errors import ConfigError, DriftGateError, MissingDependencyError
from mxa_edge.support.fileio import default_mode, replace_dir, sha256_file, write_json
from mxa_edge.support.machine import isa_line, machine_fingerprint
from mxa_edge.support.telemetry import disable_telemetry
from mxa_edge.torch_side.export.calibration import select_calibration
from mxa_edge.torch_side.export.portability import check_kernel_paths
from mxa_edge.torch_side.export.prepare import count_flops, export_output_names, fuse_model
from mxa_edge.torch_side.export.qat import qat_finetune
from mxa_edge.torch_side.export.sensitivity import choose_float_layers
from mxa_edge.torch_side.export.settings import EXPORT_DEFAULTS
from mxa_edge.torch_side.models.execution import torch_runner
from mxa_edge.torch_side.models.weights import load_run

ONNX_OPSET = 17


@dataclass
class ExportRequest:
    """What the user asked for, validated against the target's spec before any work starts."""

    spec: BackendSpec
    precision: Precision
    gate: GateSpec = DEFAULT_GATE
    fp16: bool = EXPORT_DEFAULTS.fp16
    calib: object = None
    calib_size: int = EXPORT_DEFAULTS.calib_size
    calib_method: str = EXPORT_DEFAULTS.calib_method
    seed: int = EXPORT_DEFAULTS.seed
    qat_epochs: int = EXPORT_DEFAULTS.qat_epochs
    qat_lr: float = EXPORT_DEFAULTS.qat_lr
    n_boot: int = EXPORT_DEFAULTS.n_boot
    max_noise: float = EXPORT_DEFAULTS.max_noise
    static_batch: int | None = EXPORT_DEFAULTS.static_batch
    int8_scheme: Int8Scheme = Int8Scheme(EXPORT_DEFAULTS.int8_scheme)

    def validate(self) -> ExportRequest:
        backends.check_options(self.spec, self.precision, fp16=self.fp16, static_batch=self.static_batch)
        self.gate.validate()
        if self.calib_method not in backends.CALIB_METHODS:
            raise ConfigError(
                f"unknown calibration method {self.calib_method!r}; expected one of {', '.join(backends.CALIB_METHODS)}"
            )
        if self.qat_epochs < 1:
            raise ConfigError(f"--qat needs at least 1 fine-tuning epoch, got {self.qat_epochs}")
        if self.calib_size < 1:
            raise ConfigError(f"--calib-size must be at least 1, got {self.calib_size}")
        if not self.max_noise > 0:
            raise ConfigError(
                "--max-noise must be > 0 (a ratio of logit spreads; large values keep every layer INT8), "
                f"got {self.max_noise}"
            )
        return self


@dataclass
class ExportResult:
    artifact: Path | None  # the published folder (None when rejected)
    passed: bool
    drift: dict  # drift.json's content: per-pathology table + gate fields
    summary: dict  # the manifest's drift summary
    manifest: ArtifactManifest
    rejected: Path | None = None  # where a failing export was kept
    notes: dict = field(default_factory=dict)
    signed_by: str | None = None  # the signing key's fingerprint (``sign_key``)


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "openvino", "nncf", "mxa-edge"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _stdout_to_stderr(fn):
    """Third-party progress bars (NNCF's statistics collection and QAT, ORT's histogram
    calibrators) print to stdout, which belongs to results (--json): send them to stderr."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.redirect_stdout(sys.stderr):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _quiet_nncf(load: bool):
    """NNCF logs every node it leaves in float at INFO level, on stdout (which belongs to --json
    results): quiet it for this call and restore the caller's level afterwards. NNCF sets its
    logger to INFO when first imported, so import it first (telemetry off) when it will be used."""
    if load:
        disable_telemetry()
        try:
            import nncf  # noqa: F401
        except ImportError:
            pass  # the exporter reports the missing dependency
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------- the steps


@dataclass
class _Loaded:
    run: RunRecord
    model: object  # the trained student (eval)
    fused: object  # Conv+BN fused: the reference and what is exported
    example: object  # torch (2, 1, S, S) in the model's range
    cost: dict


def _load(run_dir: Path, seed: int) -> _Loaded:
    import torch

    model, run = load_run(run_dir)
    gen = torch.Generator().manual_seed(seed)
    s = run.model.image_size
    lo, hi = run.preprocess.value_range
    example = torch.rand(2, 1, s, s, generator=gen) * (hi - lo) + lo
    return _Loaded(run, model, fuse_model(model, example), example, count_flops(model, s))


def _quantization_plan(req: ExportRequest, loaded: _Loaded, opts: ExportOptions, say):
    """Calibration set and, for PTQ, the layers kept in float; returns the calibration set."""

    say("selecting calibration images")
    calib_set = select_calibration(loaded.run, req.calib, n=req.calib_size, seed=req.seed)
    opts.calibration = calib_set.model_input(loaded.run.preprocess)
    say("layer sensitivity (which layers stay float)")
    chosen = choose_float_layers(
        loaded.fused, opts.calibration, req.max_noise, weight_max=req.int8_scheme.max_weight, progress=say
    )
    opts.float_layers = chosen.layers
    opts.layer_ranking = sorted(chosen.sensitivity, key=lambda name: -chosen.sensitivity[name])
    opts.notes["mixed_precision"] = {**chosen.summary(), "simulated_max_abs_int8_weight": req.int8_scheme.max_weight}
    return calib_set


@dataclass
class _Reference:
    """A split, as model input, and the FP32 model's logits, calibrated probabilities and input
    guard features on it."""

    split: str
    valid: object  # SplitArrays
    x: object  # float32 (N, 1, S, S)
    logits: object
    probs: object  # the run's DecisionRule applied: what predict would output
    features: object = None  # the input guard's features (the graph's ``features`` output)


def _reference(loaded: _Loaded, say, split: str = "valid") -> _Reference:
    """The fused model is the reference: equal to the trained one within 1e-4 (checked by
    fuse_model), and faster."""

    say("reading the held-out split" if split == "valid" else f"reading the {split} split")
    arrays = loaded.run.data.load(split, loaded.run.preprocess)
    x = arrays.model_input(slice(None), loaded.run.preprocess)
    out = score(torch_runner(loaded.fused, aux=True), x, outputs=("logits", "features"))
    logits = out["logits"]
    return _Reference(split, arrays, x, logits, loaded.run.decision.probabilities(logits), out["features"])


def _fit_input_guard(loaded: _Loaded, say):
    """The input guard (``mxa_edge.decision.guard``): mean and covariance of the FP32 model's features on
    (at most MAX_FIT_IMAGES) training images, threshold from the tuning split. Returns the guard
    and the tuning reference (accuracy control reuses it)."""

    pp = loaded.run.preprocess
    say("input guard: features and image statistics of the training images")
    train = loaded.run.data.load("train", pp, limit=MAX_FIT_IMAGES)
    fitted = score(
        with_image_statistics(torch_runner(loaded.fused, aux=True), pp.value_range),
        train,
        to_input=lambda rows: train.model_input(rows, pp),
        outputs=(FEATURES_OUTPUT, IMAGE_STATISTICS),
    )
    tune = _reference(loaded, say, split="tune")
    guard = fit_guard(
        fitted[FEATURES_OUTPUT],
        tune.features,
        train_statistics=fitted[IMAGE_STATISTICS],
        tune_statistics=image_statistics(tune.x, pp.value_range),
        value_range=pp.value_range,
        tune_groups=tune.valid.split.dataset,
    )
    return guard, tune


@dataclass
class _Challenge:
    """Images the guard must flag (``mxa_edge.data.ood``), as model input, by kind."""

    inputs: dict


def _challenge_inputs(loaded: _Loaded, ref: _Reference, n: int = 48) -> _Challenge:
    """Held-out laterals (when the CSV has any), inverted held-out frontals, and generated
    textures and document pages, each prepared by the run's own preprocessing."""
    import numpy as np

    pp = loaded.run.preprocess
    inputs = {}
    laterals = held_out_laterals(loaded.run.data, pp, limit=n)
    if laterals is not None:
        inputs["lateral"] = laterals.model_input(slice(None), pp)
    lo, hi = pp.value_range
    inputs["inverted"] = (lo + hi) - np.asarray(ref.x[:n])  # 1 - gray, in the model's range
    for kind, images in generated_challenge(n, 256, seed=0).items():
        inputs[kind] = np.stack([pp(g) for g in images]).astype(np.float32)
    return _Challenge(inputs)


@dataclass
class _Export:
    """One export's shared state, built once (``_prepare``) and read by every later step: what was
    asked, the loaded run, the target's exporter and options, the folders, and what the exported
    model is judged against."""

    req: ExportRequest
    loaded: _Loaded
    exporter: object  # the target's exporter (``BackendSpec.make_exporter``)
    opts: ExportOptions  # its notes (mixed precision, ...) end up in the manifest
    run_dir: Path
    out_dir: Path  # the requested artifact folder
    work: Path  # the hidden temporary folder beside it, renamed into place by ``_publish``
    started: float  # ``work``'s creation time: partial folders older than it are stale
    calib_set: object  # the calibration set (INT8), else None
    ref: _Reference  # the held-out split: what the gate judges on
    tune: _Reference  # the tuning split: the guard's threshold, accuracy control's fitting
    guard: object  # the fitted InputGuard
    challenge: _Challenge
    say: Callable[[str], None]


def _refuse_early(req: ExportRequest, out_dir: Path, sign_key, sign_password):
    """What can be refused before any work, not after: an unusable signing key, a target whose
    exporter cannot run here, an output folder (or its ``.rejected`` sibling) this tool may not
    replace. Returns the exporter."""
    if sign_key is not None:  # an unusable key fails now, not after the export's minutes
        signing_key_fingerprint(sign_key, sign_password)
    exporter = req.spec.make_exporter()
    ok, reason = exporter.available()
    if not ok:
        raise MissingDependencyError(f"cannot export to {req.spec.name}: {reason}")
    for folder in (out_dir, naming.rejected_dir(out_dir)):
        naming.check_publish_target(folder)
    return exporter


def _prepare(req: ExportRequest, exporter, run_dir: Path, out_dir: Path, say) -> _Export:
    """Steps 1-3 (the run, the quantization plan, the references, the input guard and its
    challenge images), then the hidden work folder beside ``out_dir``."""
    say("loading run")
    loaded = _load(run_dir, req.seed)
    opts = ExportOptions(
        precision=req.precision,
        fp16=req.fp16,
        calib_method=req.calib_method,
        seed=req.seed,
        int8_scheme=req.int8_scheme,
    )
    calib_set = _quantization_plan(req, loaded, opts, say) if req.precision.int8 else None
    ref = _reference(loaded, say)
    guard, tune = _fit_input_guard(loaded, say)
    challenge = _challenge_inputs(loaded, ref)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=naming.PARTIAL_SUFFIX, dir=out_dir.parent))
    started = work.stat().st_mtime
    os.chmod(work, default_mode(0o777))  # mkdtemp makes it owner-only: a service account must read it
    return _Export(
        req=req,
        loaded=loaded,
        exporter=exporter,
        opts=opts,
        run_dir=run_dir,
        out_dir=out_dir,
        work=work,
        started=started,
        calib_set=calib_set,
        ref=ref,
        tune=tune,
        guard=guard,
        challenge=challenge,
        say=say,
    )


def _write_model(ex: _Export):
    """The target's model file(s) in ``ex.work``; returns (BackendOutput, QAT info or None)."""
    import torch

    req, loaded, opts, say = ex.req, ex.loaded, ex.opts, ex.say
    qat_info = None
    if req.precision.qat:
        say("reading the training split (QAT)")
        train = loaded.run.data.load("train", loaded.run.preprocess)
        qmodel, qat_info = qat_finetune(
            loaded.fused,
            loaded.example,
            opts.calibration,
            train,
            loaded.run.preprocess,
            epochs=req.qat_epochs,
            lr=req.qat_lr,
            seed=req.seed,
            say=say,
            float_layers=opts.float_layers,
            scheme=opts.int8_scheme,
        )
        qat_info.mixed_precision = MixedPrecisionRecord.optional(opts.notes.pop("mixed_precision", None))
        say(f"exporting the QAT model to {req.spec.name}")
        out = ex.exporter.export_qat(qmodel, loaded.example, ex.work)
    else:
        say(f"exporting to {req.spec.name}")
        # The legacy ONNX tracer warns about timm's window-size branch (a constant for a fixed
        # input size): not actionable for the user. Scoped to this call.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            out = ex.exporter.export(loaded.fused, loaded.example, ex.work, opts)
    _fix_batch(ex, out)
    return out, qat_info


def _fix_batch(ex: _Export, out: BackendOutput) -> None:
    # --static-batch: the file itself gets the fixed batch, so the gate checks (and the engine
    # compiles, from the file) exactly that model.
    if ex.req.static_batch is not None:
        ex.say(f"fixing the model's batch at {ex.req.static_batch}")
        out.extra["static_batch"] = ex.exporter.fix_batch(ex.work / out.files[0], ex.req.static_batch)


def _gate(ex: _Export, out: BackendOutput):
    """The drift report, the exported model's logits and features on the held-out split (the
    golden vectors are rows of them: one engine, one pass), and the guard's flag rate on each
    challenge kind through the same engine."""

    req, ref, guard, decision = ex.req, ex.ref, ex.guard, ex.loaded.run.decision
    ex.say("drift gate")
    gate_file = ex.work / (out.gate_file or out.files[0])
    runtime = out.gate_runtime or req.spec.runtime
    engine = open_model_file(gate_file, runtime, precision=out.precision.inference_precision)
    scored = score(engine_runner(engine), ref.x, outputs=("logits", FEATURES_OUTPUT))
    if FEATURES_OUTPUT not in scored:
        raise ConfigError(
            f"the {req.spec.name} engine gives no {FEATURES_OUTPUT!r} output: the input guard needs it "
            "(an exporter must keep every output of export.prepare.AuxOutputs)"
        )
    logits, features = scored["logits"], scored[FEATURES_OUTPUT]
    challenge_rates = {
        kind: {
            "n": int(len(x)),
            "flagged": flag_rate(
                guard.flags(score(engine_runner(engine), x, outputs=(FEATURES_OUTPUT,))[FEATURES_OUTPUT], x)
            ),
        }
        for kind, x in ex.challenge.inputs.items()
    }
    executed = engine.describe()
    del engine
    v = ref.valid
    report = drift.gate(
        v.targets,
        v.mask,
        ref.probs,
        decision.probabilities(logits),
        thresholds=decision.threshold_array(),
        spec=req.gate,
        n_boot=req.n_boot,
        seed=req.seed,
        subgroups=subgroup_rows(v.split),
        split=ref.split,
        guard=guard_drift(
            guard.score(ref.features, ref.x),
            guard.score(features, ref.x),
            guard.threshold,
            n_boot=req.n_boot,
            seed=req.seed,
        ),
    )
    report.table.update(
        {
            "target": req.spec.name,
            "gated_file": gate_file.name,
            "gated_runtime": runtime,
            # What the verdict is evidence of: the deployed runtime itself, or a stand-in for it
            # (TensorRT without TensorRT here); bench, the report and verify repeat it.
            "gated_with": out.extra.get("gated_with", runtime),
            "executed_precision": executed,
        }
    )
    report.table["guard"]["challenge"] = challenge_rates
    return report, logits, features


def _accuracy_control(ex: _Export, out: BackendOutput, report) -> BackendOutput:
    """A failing PTQ INT8 re-quantized once by the target's accuracy control, the gate's own score
    in the loop, fitted on the TUNING split (never on the held-out images); the first gate's
    summary is kept in the quantization record."""
    ex.say("INT8 drifted: retrying with accuracy control on the tuning split (reverting layers to float)")
    first = report.summary()
    tune = ex.tune
    out = ex.exporter.export_with_accuracy_control(
        ex.loaded.fused,
        ex.loaded.example,
        ex.work,
        ex.opts,
        (tune.x, tune.valid.targets, tune.valid.mask, ex.loaded.run.decision),
        ex.req.gate,
        tune.probs,
        out,
    )
    out.quantization["accuracy_control"]["first_gate"] = first
    _fix_batch(ex, out)
    return out


def _golden(work: Path, ref: _Reference, exported_logits, exported_features, guard, report) -> GoldenRecord:
    """Golden vectors for ``mxa-edge verify``: a few held-out images with the exported model's
    logits and input-guard scores as the gate measured them, the FP32 model's, and the gate
    machine."""
    import numpy as np

    idx = golden_indices(len(ref.valid))
    return write_golden(
        work,
        np.asarray(ref.valid.images[idx]),
        exported_logits[idx],
        ref.logits[idx],
        guard_scores=(guard.score(exported_features[idx], ref.x[idx]), guard.score(ref.features[idx], ref.x[idx])),
        gated_runtime=report.table["gated_runtime"],
        executed_precision=report.table["executed_precision"],
        gate_isa=isa_line(),
        gate_machine=machine_fingerprint(),
    )


def _check_kernel_paths(ex: _Export, out: BackendOutput, golden, report):
    """The CPU classes this artifact was checked on (``portability.check_kernel_paths``); a
    PORTABLE INT8 export whose other-class outputs leave verify's tolerance fails the gate here."""

    req = ex.req
    idx = golden_indices(len(ex.ref.valid))
    checked, failure = check_kernel_paths(
        model=ex.work / (out.gate_file or out.files[0]),
        runtime=out.gate_runtime or req.spec.runtime,
        inference_precision=out.precision.inference_precision,
        int8=req.precision.int8,
        scheme=req.int8_scheme,
        quantization=out.quantization,
        x=ex.ref.x[idx],
        golden=golden,
        guard=ex.guard,
        say=ex.say,
    )
    if failure:
        report.passed = False
        report.reasons.append(failure)
        report.table["passed"] = False
        report.table.setdefault("failures", []).append(failure)
    report.table["checked_on"] = checked
    return checked


def _records(ex: _Export, out: BackendOutput, report, qat_info, golden: GoldenRecord):
    """drift.json, drift.png and the ``ArtifactManifest``, written into the work folder."""

    req, loaded, opts, work, guard = ex.req, ex.loaded, ex.opts, ex.work, ex.guard
    write_json(work / naming.DRIFT, report.table)
    spec = loaded.run.model
    drift.plot(report, work / naming.DRIFT_PLOT, f"{spec.name} -> {req.spec.name} {out.precision.weights}")
    # The exporter's settings (a dict: BackendOutput is the targets' interface), typed here.
    quantization = QuantizationRecord.from_dict(out.quantization) if out.quantization is not None else None
    if quantization is not None and "mixed_precision" in opts.notes:
        quantization.mixed_precision = MixedPrecisionRecord.from_dict(opts.notes["mixed_precision"])
    manifest = ArtifactManifest(
        model_id=f"{spec.name}-{req.spec.name}-{'qat-' if req.precision.qat else ''}{out.precision.weights}",
        runtime=req.spec.runtime,
        entry=out.files[0],
        files={name: sha256_file(work / name) for name in [*out.files, guard.save(work)]},
        preprocess=loaded.run.preprocess,
        precision=out.precision,
        model=spec,
        outputs=export_output_names(spec.mxa is not None),
        decision=loaded.run.decision,
        guard=guard.record(
            held_out={k: v for k, v in report.table["guard"].items() if k != "challenge"},
            challenge=report.table["guard"]["challenge"],
        ),
        quantization=quantization,
        qat=qat_info,
        calibration=ex.calib_set.summary() if ex.calib_set is not None else None,
        source_run=SourceRun(
            path=str(ex.run_dir),
            weights_sha256=loaded.run.weights_sha256,
            data_fingerprint=dict(loaded.run.data.fingerprint),
            data=loaded.run.data,
        ),
        flops=loaded.cost["flops"],
        macs=loaded.cost["macs"],
        params=loaded.cost["params"],
        drift=report.summary(),
        verification=golden,
        # from_dict: the target's notes and extra are free-form (ExportSettings.extra keeps the rest)
        export=ExportSettings.from_dict(
            {
                "target": req.spec.name,
                "onnx_opset": ONNX_OPSET,
                **{k: v for k, v in opts.notes.items() if k != "mixed_precision"},
                **out.extra,
            }
        ),
        versions=_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest.save(work)
    return manifest


def _sign(ex: _Export, sign_key, sign_password) -> str:
    """Sign the finished work folder (``formats.provenance``); returns the key's fingerprint."""

    ex.say("signing")
    return sign_folder(ex.work, sign_key, sign_password)


def _publish(ex: _Export, result: ExportResult, report) -> None:
    """Rename the finished folder into place (``fileio.replace_dir``: crash-safe); only folders
    this tool wrote are ever replaced (``naming.check_publish_target``). Once published, the work
    folders that killed exports to the same name left beside it (older than ``ex.started``) go."""
    work, out_dir, say = ex.work, ex.out_dir, ex.say
    if not report.passed:
        rejected = naming.rejected_dir(out_dir)
        naming.check_publish_target(rejected)
        replace_dir(work, rejected)
        result.rejected = rejected
        shown = report.reasons[:4] + ([f"{len(report.reasons) - 4} more"] if len(report.reasons) > 4 else [])
        err = DriftGateError(
            f"{ex.req.spec.name} export drifted past the gate on the held-out split: {'; '.join(shown)}; "
            f"not published, kept as {rejected}"
        )
        err.result = result
        raise err
    naming.check_publish_target(out_dir)
    replace_dir(work, out_dir)
    result.artifact = out_dir
    say(f"published {out_dir}")
    stale = naming.rejected_dir(out_dir)
    if naming.is_artifact(stale):  # an earlier attempt under this name, now superseded (bench would list it)
        shutil.rmtree(stale, ignore_errors=True)
        say(f"removed the superseded {stale.name}")
    for partial in naming.stale_partials(out_dir, ex.started):
        shutil.rmtree(partial, ignore_errors=True)
        say(f"removed {partial.name}, left by an interrupted export to {out_dir.name}")


def _check_engine_built(out: BackendOutput, out_dir: Path, result: ExportResult) -> None:
    """A target whose engine must be built elsewhere (TensorRT without TensorRT/CUDA here):
    MissingDependencyError, raised once the portable files are published and gated."""
    missing = out.extra.get("engine_missing_reason")
    if missing:
        build = out.extra.get("build_file", "BUILD_TRT.txt")
        err = MissingDependencyError(
            f"{missing}: wrote {out_dir / out.files[0]} (drift-gated through {out.gate_runtime}) "
            f"and the build command in {out_dir / build}; run it on the GPU machine"
        )
        err.result = result
        raise err


# ---------------------------------------------------------------------------------- the story


@_stdout_to_stderr
def export_run(
    run_dir,
    target: str = EXPORT_DEFAULTS.target,
    out_dir=None,
    *,
    int8: bool = EXPORT_DEFAULTS.int8,
    qat: bool = EXPORT_DEFAULTS.qat,
    calib=None,
    calib_size: int = EXPORT_DEFAULTS.calib_size,
    calib_method: str = EXPORT_DEFAULTS.calib_method,
    max_macro_drop: float = DEFAULT_GATE.max_macro_drop,
    max_drop: float = DEFAULT_GATE.max_drop,
    gate: GateSpec | None = None,
    fp16: bool = EXPORT_DEFAULTS.fp16,
    seed: int = EXPORT_DEFAULTS.seed,
    qat_epochs: int = EXPORT_DEFAULTS.qat_epochs,
    qat_lr: float = EXPORT_DEFAULTS.qat_lr,
    n_boot: int = EXPORT_DEFAULTS.n_boot,
    max_noise: float = EXPORT_DEFAULTS.max_noise,
    static_batch: int | None = EXPORT_DEFAULTS.static_batch,
    int8_scheme: Int8Scheme | str = EXPORT_DEFAULTS.int8_scheme,
    sign_key=None,
    sign_password: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a training run; see the module docstring for the steps and failure behaviour.
    ``gate`` (a GateSpec) sets every bound of the gate; without it ``max_macro_drop``/``max_drop``
    set the AUC bounds and the rest keep their defaults.

    Raises DriftGateError (``.result`` holds the ExportResult with the drift table) when the
    gate fails, and, for a target whose engine must be built elsewhere (TensorRT without
    TensorRT/CUDA here), MissingDependencyError AFTER the portable files are published and
    gated (``.result`` as well).

    ``sign_key``: an EC private key (``mxa-edge keys``); a PUBLISHED artifact is signed with it
    (``formats.provenance``) before it is renamed into place. A rejected one is never signed.
    """
    say = progress or (lambda msg: None)
    req = ExportRequest(
        spec=backends.get(target),
        precision=Precision.from_flags(int8=int8, fp16=fp16, qat=qat),
        gate=gate if gate is not None else replace(DEFAULT_GATE, max_macro_drop=max_macro_drop, max_drop=max_drop),
        fp16=fp16,
        calib=calib,
        calib_size=calib_size,
        calib_method=calib_method,
        seed=seed,
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
        n_boot=n_boot,
        max_noise=max_noise,
        static_batch=static_batch,
        int8_scheme=Int8Scheme(int8_scheme),
    ).validate()
    run_dir = Path(run_dir).absolute()
    if out_dir is None:
        out_dir = naming.default_artifact_dir(run_dir, target, req.precision, static_batch)
    out_dir = Path(out_dir).absolute()
    exporter = _refuse_early(req, out_dir, sign_key, sign_password)

    ex = _prepare(req, exporter, run_dir, out_dir, say)
    try:
        with _quiet_nncf(load=req.precision.qat or (req.precision.int8 and req.spec.accuracy_control)):
            out, qat_info = _write_model(ex)
            report, logits, features = _gate(ex, out)
            if not report.passed and req.spec.accuracy_control and req.precision is Precision.INT8:
                out = _accuracy_control(ex, out, report)
                report, logits, features = _gate(ex, out)
        golden = _golden(ex.work, ex.ref, logits, features, ex.guard, report)
        golden.checked_on = KernelClassChecks.from_dict(_check_kernel_paths(ex, out, golden, report))
        manifest = _records(ex, out, report, qat_info, golden)
        result = ExportResult(None, report.passed, report.table, report.summary(), manifest, notes=ex.opts.notes)
        if sign_key is not None and report.passed:
            result.signed_by = _sign(ex, sign_key, sign_password)
        _publish(ex, result, report)
    finally:
        if ex.work.exists():
            shutil.rmtree(ex.work, ignore_errors=True)
    _check_engine_built(out, out_dir, result)
    return result
