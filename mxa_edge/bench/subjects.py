"""The things a benchmark measures ("subjects"): one per table row.

A subject carries its row metadata (backend, precision, params, FLOPs, size, AUC) and an
``open`` function that loads the model once and returns ``bind(x) -> run()``: ``bind``
prepares a fixed input batch, ``run`` runs it once. Torch is imported only by the PyTorch
and CUDA subjects, so the ONNX Runtime and OpenVINO rows work on the light install.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

PASS = "pass"
REJECTED = "exported but failed validation"
FAILED = "failed"
UNAVAILABLE = "unavailable"

Bind = Callable[[np.ndarray], Callable[[], object]]


@dataclass
class Subject:
    key: str  # unique row id
    group: str  # rows sharing a PyTorch FP32 reference (the source run)
    backend: str
    precision: str
    compute: str  # which peak applies: fp32 / bf16 / fp16 / int8
    model: str
    image_size: int | None
    status: str = PASS
    reason: str | None = None
    path: str | None = None
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None
    macro_auc: float | None = None
    macro_auc_source: str | None = None
    worst_delta: float | None = None
    worst_label: str | None = None
    notes: list[str] = field(default_factory=list)
    # Loads the model; returns (bind, info) where info may refine precision/notes.
    open: Callable[[int], tuple[Bind, dict]] | None = None
    reference: bool = False  # the group's PyTorch FP32 row

    def row(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("open",)}
        d["gflops"] = self.flops / 1e9 if self.flops is not None else None
        return d


def torch_installed() -> bool:
    """Whether torch can be imported here, without importing it."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: imports of torch are blocked
        return False


def cuda_status() -> tuple[bool, str]:
    if not torch_installed():
        return False, "torch is not installed (pip install 'mxa-edge[train]')"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU here"
    return True, ""


def tensorrt_status() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed"
    ok, reason = cuda_status()
    return ok, reason


def _files_mb(folder: Path, names) -> float:
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file()) / 1e6


# --------------------------------------------------------------------------- PyTorch


def _torch_bind(model, device: str = "cpu", autocast: str | None = None) -> Bind:
    import torch

    def bind(x: np.ndarray):
        t = torch.from_numpy(x).to(device)

        def run():
            with torch.inference_mode():
                if autocast:
                    with torch.autocast(device, dtype=getattr(torch, autocast)):
                        out = model(t)
                else:
                    out = model(t)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    return bind


def pytorch_subject(run_dir: Path, run_manifest: dict, metrics: dict | None, cost: dict, group: str) -> Subject:
    def open_(threads: int):
        import torch

        from mxa_edge.export.prepare import AuxOutputs, fuse_model
        from mxa_edge.training.run_io import load_run

        torch.set_num_threads(threads)
        model, _ = load_run(run_dir)
        # The same graph the exports contain: Conv+BN fused, every output (logits + MXA boxes).
        return _torch_bind(AuxOutputs(fuse_model(model)).eval()), {}

    spec = run_manifest.get("model") or {}
    return Subject(
        key=f"{group}::pytorch-fp32",
        group=group,
        backend="PyTorch eager",
        precision="FP32",
        compute="fp32",
        model=run_manifest.get("model_name") or spec.get("variant", "?"),
        image_size=spec.get("image_size"),
        path=str(run_dir),
        params=cost.get("params"),
        flops=cost.get("flops"),
        size_mb=_files_mb(run_dir, ["weights.safetensors"]),
        macro_auc=(metrics or {}).get("macro_auc"),
        macro_auc_source="run metrics.json (validation split)" if metrics else None,
        notes=["Conv+BN fused, torch.inference_mode"],
        open=open_,
        reference=True,
    )


def cuda_subject(run_dir: Path, run_manifest: dict, cost: dict, group: str) -> Subject:
    spec = run_manifest.get("model") or {}
    s = Subject(
        key=f"{group}::pytorch-cuda-bf16",
        group=group,
        backend="PyTorch CUDA",
        precision="bf16 autocast",
        compute="bf16",
        model=run_manifest.get("model_name") or spec.get("variant", "?"),
        image_size=spec.get("image_size"),
        path=str(run_dir),
        params=cost.get("params"),
        flops=cost.get("flops"),
        size_mb=_files_mb(run_dir, ["weights.safetensors"]),
    )
    ok, reason = cuda_status()
    if not ok:
        s.status, s.reason = UNAVAILABLE, reason
        return s

    def open_(threads: int):

        from mxa_edge.bench.machine import gpu_name
        from mxa_edge.export.prepare import AuxOutputs, fuse_model
        from mxa_edge.training.run_io import load_run

        model, _ = load_run(run_dir)
        model = AuxOutputs(fuse_model(model)).eval().to("cuda")
        return _torch_bind(model, "cuda", "bfloat16"), {"notes": [f"{gpu_name()}; input already on the GPU"]}

    s.open = open_
    return s


# --------------------------------------------------------------------------- artifacts


def _artifact_meta(path: Path, manifest: dict, group: str) -> dict:
    drift = manifest.get("drift") or {}
    return dict(
        group=group,
        model=manifest.get("model_id", path.name),
        image_size=(manifest.get("preprocess") or {}).get("image_size"),
        path=str(path),
        params=manifest.get("params"),
        flops=manifest.get("flops"),
        size_mb=_files_mb(path, (manifest.get("files") or {}).keys()),
        macro_auc=drift.get("macro_auc_new"),
        worst_delta=drift.get("worst_delta"),
        worst_label=drift.get("worst_label"),
        macro_auc_source=f"drift gate ({drift.get('n_images')} validation images)" if drift else None,
    )


def _rejection(d: dict) -> str:
    """One line on why the drift gate refused an export."""
    if not d:
        return "drift gate failed"
    md, wd = d.get("macro_delta"), d.get("worst_delta")
    return (
        f"drift gate failed: macro AUC {md:+.4f} (bound -{d.get('max_macro_drop')}), worst {d.get('worst_label')} "
        f"{wd:+.4f} (bound -{d.get('max_drop')}); {len(d.get('drifted') or [])} over their bound"
        if md is not None and wd is not None
        else "drift gate failed"
    )


def artifact_subjects(path: Path, group: str, rejected: bool = False) -> list[Subject]:
    """Rows for one artifact folder; an OpenVINO FP32 IR gives two (f32 hint, CPU default)."""
    from mxa_edge.runtime.artifact import load_artifact

    path = Path(path)
    try:
        art = load_artifact(path)
    except Exception as exc:  # an unreadable artifact is a row, not a crash
        return [
            Subject(
                key=str(path),
                group=group,
                backend="?",
                precision="?",
                compute="fp32",
                model=path.name,
                image_size=None,
                status=FAILED,
                reason=f"{type(exc).__name__}: {exc}",
                path=str(path),
            )
        ]
    m = art.manifest
    meta = _artifact_meta(path, m, group)
    weights = (art.precision.get("weights") or "fp32").lower()
    compute = "int8" if "int8" in weights else "fp16" if "16" in weights else "fp32"
    status = REJECTED if rejected else PASS
    reason = _rejection(m.get("drift") or {}) if rejected else None

    def engine_open(precision_override=None, use_override=False):
        def open_(threads: int):
            from mxa_edge.runtime.engines import open_engine

            eng = open_engine(art, threads, precision=precision_override) if use_override else open_engine(art, threads)
            info = {}
            if hasattr(eng, "inference_precision"):
                info["inference_precision"] = eng.inference_precision
            return (lambda x: lambda: eng.run(x)), info

        return open_

    backend = art.backend
    label = weights.upper() + (" QAT" if m.get("qat") else "")  # PTQ and QAT exports side by side
    static_batch = (m.get("export") or {}).get("static_batch")  # mxa-edge export --static-batch N
    fixed = f", static batch {static_batch}" if static_batch else ""
    if backend == "onnxruntime":
        return [
            Subject(
                key=str(path),
                backend="ONNX Runtime",
                precision=label,
                compute=compute,
                status=status,
                reason=reason,
                open=engine_open(),
                **meta,
            )
        ]
    if backend == "openvino":
        hint = art.precision.get("inference_precision", "f32")
        rows = [
            Subject(
                key=str(path),
                backend="OpenVINO",
                precision=f"{label} ({hint} hint){fixed}",
                compute=compute,
                status=status,
                reason=reason,
                open=engine_open(),
                **meta,
            )
        ]
        if compute == "fp32":
            d = Subject(
                key=f"{path}::default",
                backend="OpenVINO",
                precision=f"CPU default{fixed}",
                compute="bf16",
                status=status,
                reason=reason,
                open=engine_open(None, True),
                **meta,
            )
            d.notes.append(
                "same IR compiled without a precision hint; AUC is the f32 gate's (this precision was not gated)"
            )
            rows.append(d)
        return rows
    if backend == "tensorrt":
        s = Subject(
            key=str(path),
            backend="TensorRT",
            precision=weights.upper(),
            compute=compute,
            status=status,
            reason=reason,
            **meta,
        )
        s.notes.append("AUC from the drift gate through ONNX Runtime on the exported ONNX")
        ok, why = tensorrt_status()
        engine = path / "model.engine"
        if not ok:
            s.status, s.reason = UNAVAILABLE, why
        elif not engine.is_file():
            s.status, s.reason = UNAVAILABLE, f"no model.engine in {path}; build it with the command in BUILD_TRT.txt"
        else:
            s.open = lambda threads: (_tensorrt_bind(engine), {})
        return [s]
    return [
        Subject(
            key=str(path),
            backend=backend,
            precision=weights.upper(),
            compute=compute,
            status=FAILED,
            reason=f"unknown backend {backend!r}",
            **meta,
        )
    ]


def tensorrt_placeholder(group: str, precision: str, model: str, reason: str, cost: dict) -> Subject:
    return Subject(
        key=f"{group}::tensorrt-{precision.lower()}",
        group=group,
        backend="TensorRT",
        precision=precision,
        compute="int8" if precision == "INT8" else "fp16",
        model=model,
        image_size=None,
        status=UNAVAILABLE,
        reason=reason,
        params=cost.get("params"),
        flops=cost.get("flops"),
    )


def _tensorrt_bind(engine_path: Path) -> Bind:
    """Runs a serialized TensorRT engine (TensorRT 10 tensor-address API) on torch CUDA buffers."""
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    ctx = engine.create_execution_context()
    stream = torch.cuda.Stream()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def bind(x: np.ndarray):
        inp = torch.from_numpy(x).cuda()
        ctx.set_input_shape("image", tuple(inp.shape))
        bufs = {}
        for n in outputs:
            dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(n)))).dtype
            bufs[n] = torch.empty(tuple(ctx.get_tensor_shape(n)), dtype=dtype, device="cuda")

        def run():
            ctx.set_input_shape("image", tuple(inp.shape))
            ctx.set_tensor_address("image", inp.data_ptr())
            for n, b in bufs.items():
                ctx.set_tensor_address(n, b.data_ptr())
            ctx.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            return bufs

        return run

    return bind
