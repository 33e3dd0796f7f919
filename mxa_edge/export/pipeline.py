"""export_run: run folder -> verified, drift-gated artifact folder. The story, in order:

1. load the run (weights hash checked) and fuse Conv+BN (checked against the unfused model);
2. calibration set (INT8, also QAT's range initialisation); for PTQ, the label-free
   sensitivity analysis on it picks the few layers kept in float (``sensitivity.py``);
3. the backend writes its model file(s) into a hidden temporary folder; with ``qat`` the
   fake-quantized model is first fine-tuned on the TRAIN split, distilled from the FP32
   model (``qat.py``), and exported as is instead of post-training quantized;
4. drift gate on the run's valid split: FP32 PyTorch vs the exported model through the
   runtime engine; drift.json + drift.png;
   OpenVINO INT8 (PTQ) that fails is re-quantized once with NNCF accuracy control (on the
   gate's own score over the valid split) and gated again; the manifest's
   ``quantization.accuracy_control`` lists the ops reverted to float and the first gate;
5. manifest.json (hashes of every model file, precision, calibration, FLOPs, versions);
6. publish: the temporary folder is renamed to the requested name only when the gate
   passes. A failing export is kept as ``<name>.rejected/`` (replacing an older one) for
   inspection — never under the requested name — and DriftGateError is raised.
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mxa_edge.errors import ConfigError, DriftGateError, MissingDependencyError
from mxa_edge.export.base import CALIB_METHODS, ExportOptions, get_backend
from mxa_edge.fileio import sha256_file, write_json

TARGETS = ("onnx", "openvino", "tensorrt")
DEFAULT_NOISE_BUDGET = 0.08  # = sensitivity.DEFAULT_BUDGET (kept import-free for the CLI)


@dataclass
class ExportResult:
    artifact: Path | None  # the published folder (None when rejected)
    passed: bool
    drift: dict  # drift.json's content: per-pathology table + gate fields
    summary: dict  # the manifest's drift summary
    manifest: dict
    rejected: Path | None = None  # where a failing export was kept
    notes: dict = field(default_factory=dict)


def default_out_dir(
    run_dir: Path, target: str, int8: bool, fp16: bool, qat: bool, static_batch: int | None = None
) -> Path:
    precision = "qat-int8" if qat else "int8" if int8 else "fp16" if fp16 else "fp32"
    fixed = f"-b{static_batch}" if static_batch else ""  # beside, not over, the dynamic-batch export
    return Path(run_dir) / "exports" / f"{target}-{precision}{fixed}"


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "openvino", "nncf", "mxa-edge"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _check_options(
    target,
    int8,
    qat,
    fp16,
    calib_method,
    calib_size,
    max_macro_drop,
    max_drop,
    qat_epochs=1,
    max_noise=DEFAULT_NOISE_BUDGET,
    static_batch=None,
):
    if target not in TARGETS:
        raise ConfigError(f"unknown export target {target!r}; expected one of {', '.join(TARGETS)}")
    if calib_method not in CALIB_METHODS:
        raise ConfigError(f"unknown calibration method {calib_method!r}; expected one of {', '.join(CALIB_METHODS)}")
    if qat and target == "tensorrt":
        raise ConfigError(
            "--qat exports to onnx or openvino; TensorRT wants symmetric Q/DQ, use --target tensorrt --int8"
        )
    if qat and fp16:
        raise ConfigError("--qat gives an INT8 model; drop --fp16")
    if qat_epochs < 1:
        raise ConfigError(f"--qat needs at least 1 fine-tuning epoch, got {qat_epochs}")
    if fp16 and int8 and target != "tensorrt":
        raise ConfigError("--fp16 and --int8 together are only meaningful for --target tensorrt")
    if calib_size < 1:
        raise ConfigError(f"--calib-size must be at least 1, got {calib_size}")
    if not max_noise > 0:
        raise ConfigError(
            f"--max-noise must be > 0 (a ratio of logit spreads; large values keep every layer INT8), got {max_noise}"
        )
    if max_macro_drop < -1 or max_drop < -1:
        raise ConfigError("drift bounds are AUC drops and must be >= -1")
    if static_batch is not None and (target != "openvino" or static_batch < 1):
        raise ConfigError(
            f"--static-batch takes a batch size >= 1 and applies to --target openvino, got {static_batch} for {target}"
        )


def _stdout_to_stderr(fn):
    """Third-party progress bars (NNCF's statistics collection and QAT, ORT's histogram
    calibrators) print to stdout, which belongs to results (--json): send them to stderr."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.redirect_stdout(sys.stderr):
            return fn(*args, **kwargs)

    return wrapper


@_stdout_to_stderr
def export_run(
    run_dir,
    target: str = "onnx",
    out_dir=None,
    *,
    int8: bool = False,
    qat: bool = False,
    calib=None,
    calib_size: int = 300,
    calib_method: str = "minmax",
    max_macro_drop: float = 0.005,
    max_drop: float = 0.02,
    fp16: bool = False,
    seed: int = 0,
    qat_epochs: int = 1,
    qat_lr: float = 1e-5,
    n_boot: int = 1000,
    max_noise: float = DEFAULT_NOISE_BUDGET,
    static_batch: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a training run; see the module docstring for the steps and failure behaviour.

    Raises DriftGateError (``.result`` holds the ExportResult with the drift table) when the
    gate fails, and, for ``target="tensorrt"`` without TensorRT/CUDA here, MissingDependencyError
    AFTER the Q/DQ ONNX and BUILD_TRT.txt are published and gated (``.result`` as well).
    """
    import torch

    from mxa_edge.data.arrays import load_split_arrays
    from mxa_edge.export import drift as drift_mod
    from mxa_edge.export.prepare import count_flops, fuse_model
    from mxa_edge.runtime.engines import open_model_file
    from mxa_edge.training.run_io import load_run, run_preprocess

    say = progress or (lambda msg: None)
    _check_options(
        target, int8, qat, fp16, calib_method, calib_size, max_macro_drop, max_drop, qat_epochs, max_noise, static_batch
    )
    int8 = int8 or qat  # QAT is INT8 quantization-aware training: --qat alone means INT8
    run_dir = Path(run_dir).absolute()
    backend = get_backend(target)
    if target != "tensorrt":  # tensorrt always writes the ONNX + command, even without TensorRT
        ok, reason = backend.available()
        if not ok:
            raise MissingDependencyError(f"cannot export to {target}: {reason}")

    say("loading run")
    model, run_manifest = load_run(run_dir)
    spec = model.spec
    pp = run_preprocess(run_manifest)
    gen = torch.Generator().manual_seed(seed)
    s = pp.image_size
    lo, hi = pp.value_range
    example = torch.rand(2, 1, s, s, generator=gen) * (hi - lo) + lo
    fused = fuse_model(model, example)
    cost = count_flops(model, s)

    calib_set = None
    opts = ExportOptions(int8=int8, fp16=fp16, calib_method=calib_method, seed=seed)
    if int8:
        from mxa_edge.export.calibration import select_calibration

        say("selecting calibration images")
        calib_set = select_calibration(run_manifest, calib, n=calib_size, seed=seed)
        opts.calibration = calib_set.model_input(pp)
        from mxa_edge.export.sensitivity import choose_float_layers

        say("layer sensitivity (which layers stay float)")
        chosen = choose_float_layers(fused, opts.calibration, max_noise, progress=say)
        opts.float_layers = chosen.layers
        opts.notes["mixed_precision"] = chosen.summary()

    data = run_manifest.get("data") or {}
    say("reading the validation split")
    valid = load_split_arrays(
        data["root"],
        "valid",
        pp,
        uncertainty=data.get("uncertainty", "u1"),
        blank=data.get("blank", "negative"),
        frontal_only=data.get("frontal_only", True),
        ap_pa=data.get("ap_pa"),
    )
    valid_x = valid.model_input(slice(None), pp)
    # The fused model is the reference: equal to the trained one within 1e-4 (checked above), faster.
    prob_ref = drift_mod.torch_probs(fused, valid_x)

    qat_info = None
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, target, int8, fp16, qat, static_batch)
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    # NNCF logs every node it leaves in float at INFO level, on stdout (which belongs to
    # --json results); quiet it for this call and restore the caller's level afterwards.
    if (target == "openvino" and int8) or qat:
        # NNCF sets its logger to INFO when first imported: import it (telemetry off first)
        # before quieting it, or the import would undo the setting.
        from mxa_edge.export._telemetry import disable_telemetry

        disable_telemetry()
        try:
            import nncf  # noqa: F401
        except ImportError:
            pass  # the backend reports the missing dependency
    nncf_logger = logging.getLogger("nncf")
    nncf_level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        if qat:
            from mxa_edge.export.qat import export_qat, qat_finetune

            say("reading the training split (QAT)")
            train = load_split_arrays(
                data["root"],
                "train",
                pp,
                uncertainty=data.get("uncertainty", "u1"),
                blank=data.get("blank", "negative"),
                frontal_only=data.get("frontal_only", True),
                ap_pa=data.get("ap_pa"),
            )
            qmodel, qat_info = qat_finetune(
                fused,
                example,
                opts.calibration,
                train,
                pp,
                epochs=qat_epochs,
                lr=qat_lr,
                seed=seed,
                say=say,
                float_layers=opts.float_layers,
            )
            qat_info["mixed_precision"] = opts.notes.pop("mixed_precision", None)
            say(f"exporting the QAT model to {target}")
            out = export_qat(qmodel, example, work, target)
        else:
            say(f"exporting to {target}")
            # The legacy ONNX tracer warns about timm's window-size branch (a constant for a
            # fixed input size): not actionable for the user. Scoped to this call.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                out = backend.export(fused, example, work, opts)

        def fix_batch(out):
            # --static-batch: the IR itself gets the fixed batch, so the gate checks (and the
            # engine compiles, from the file) exactly that model; see OpenVinoEngine.
            if static_batch is not None:
                from mxa_edge.export.openvino_backend import fix_ir_batch

                say(f"fixing the IR's batch at {static_batch}")
                out.extra["static_batch"] = fix_ir_batch(work / out.files[0], static_batch)

        fix_batch(out)

        def run_gate(out):
            say("drift gate")
            gate_file = work / (out.gate_file or out.files[0])
            engine = open_model_file(
                gate_file, out.gate_runtime or out.runtime, precision=out.precision.get("inference_precision")
            )
            prob_new = drift_mod.engine_probs(engine, valid_x)
            del engine
            report = drift_mod.gate(
                valid.targets,
                valid.mask,
                prob_ref,
                prob_new,
                max_macro_drop=max_macro_drop,
                max_drop=max_drop,
                n_boot=n_boot,
                seed=seed,
            )
            return gate_file, report

        gate_file, report = run_gate(out)
        if not report.passed and target == "openvino" and int8 and not qat:
            say("INT8 drifted: retrying with NNCF accuracy control (reverting the worst layers to float)")
            first = report.summary()
            out = backend.export_with_accuracy_control(
                fused,
                example,
                work,
                opts,
                (valid_x, valid.targets, valid.mask),
                max_macro_drop,
                max_drop,
                prob_ref,
                out,
            )
            out.quantization["accuracy_control"]["first_gate"] = first
            fix_batch(out)
            gate_file, report = run_gate(out)
        report.table.update(
            {"target": target, "gated_file": gate_file.name, "gated_runtime": out.gate_runtime or out.runtime}
        )
        write_json(work / "drift.json", report.table)
        drift_mod.plot(report, work / "drift.png", f"{spec.name} -> {target} {out.precision['weights']}")

        model_files = list(out.files)
        manifest = {
            "format": "mxa-edge-artifact",
            "format_version": 1,
            "model_id": f"{spec.name}-{target}-{'qat-' if qat else ''}{out.precision['weights']}",
            "backend": out.runtime,
            "entry": out.files[0],
            "files": {name: sha256_file(work / name) for name in model_files},
            "inputs": ["image"],
            "outputs": ["logits"] + (["roi", "attention", "attention_box"] if spec.mxa else []),
            "labels": list(run_manifest["labels"]),
            "thresholds": {
                k: float((run_manifest.get("thresholds") or {}).get(k, 0.5)) for k in run_manifest["labels"]
            },
            "preprocess": pp.to_dict(),
            "precision": out.precision,
            "quantization": None
            if out.quantization is None
            else {
                **out.quantization,
                **({"mixed_precision": opts.notes["mixed_precision"]} if "mixed_precision" in opts.notes else {}),
            },
            "qat": qat_info,
            "calibration": calib_set.summary() if calib_set is not None else None,
            "source_run": {
                "path": str(run_dir),
                "weights_sha256": run_manifest.get("weights_sha256"),
                "data_fingerprint": data.get("fingerprint"),
            },
            "model": spec.to_dict(),
            # FP32 model at batch 1, torch FlopCounterMode: conv/linear/matmul only, 2 FLOPs per MAC.
            "flops": cost["flops"],
            "macs": cost["macs"],
            "params": cost["params"],
            "drift": report.summary(),
            "export": {
                "target": target,
                "onnx_opset": 17,
                **{k: v for k, v in opts.notes.items() if k != "mixed_precision"},
                **out.extra,
            },
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(work / "manifest.json", manifest)
        result = ExportResult(None, report.passed, report.table, report.summary(), manifest, notes=opts.notes)

        if not report.passed:
            rejected = out_dir.with_name(out_dir.name + ".rejected")
            if rejected.exists():
                shutil.rmtree(rejected)
            os.replace(work, rejected)
            result.rejected = rejected
            worst = ", ".join(
                f"{k} {report.table['per_label'][k]['delta']:+.4f}"
                if k != "macro"
                else f"macro {report.table['macro_delta']:+.4f}"
                for k in report.drifted
            )
            err = DriftGateError(
                f"{target} export drifted past its bound (max drop {max_drop}, macro {max_macro_drop}): {worst}; "
                f"not published, kept as {rejected}"
            )
            err.result = result
            raise err

        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
        result.artifact = out_dir
        say(f"published {out_dir}")
        stale = out_dir.with_name(out_dir.name + ".rejected")
        if stale.is_dir():  # an earlier attempt under this name, now superseded (bench would list it)
            shutil.rmtree(stale, ignore_errors=True)
            say(f"removed the superseded {stale.name}")
    finally:
        nncf_logger.setLevel(nncf_level)
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)

    if target == "tensorrt" and not out.extra.get("engine_built"):
        err = MissingDependencyError(
            f"{out.extra['engine_missing_reason']}: wrote {out_dir / out.files[0]} (drift-gated through ONNX Runtime) "
            f"and the build command in {out_dir / 'BUILD_TRT.txt'}; run it on the GPU machine"
        )
        err.result = result
        raise err
    return result
