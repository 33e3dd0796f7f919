"""The things a benchmark measures ("subjects"): one per table row.

A subject carries its row metadata (backend, precision, params, FLOPs, size, AUC) and an
``open`` function that loads the model once and returns ``bind(x) -> run()``: ``bind``
prepares a fixed input batch, ``run`` runs it once. Torch is imported only by the PyTorch
and CUDA subjects, so the ONNX Runtime and OpenVINO rows work on the light install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mxa_edge import torch_side
from mxa_edge.backends import BackendSpec, for_runtime
from mxa_edge.formats import Artifact, Precision, RunRecord, load_artifact, naming
from mxa_edge.runtime.engines import open_engine

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
    order: int = 50  # row order within a group: the backend's registry order, then precision
    value_range: tuple[float, float] = (-1024.0, 1024.0)  # the model's input range (its Preprocess)

    def row(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("open",)}
        d["gflops"] = self.flops / 1e9 if self.flops is not None else None
        return d


def _files_mb(folder: Path, names) -> float:
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file()) / 1e6


# --------------------------------------------------------------------------- PyTorch


def pytorch_subject(run: RunRecord, metrics: dict | None, cost: dict, group: str) -> Subject:
    run_dir = run.path

    def open_(threads: int):
        torch_side.set_threads(threads)
        # The same graph the exports contain: Conv+BN fused, every output (logits + MXA boxes).
        return torch_side.model_bind(torch_side.deployed_graph(torch_side.load_run_model(run))), {}

    return Subject(
        key=f"{group}::pytorch-fp32",
        group=group,
        backend="PyTorch eager",
        precision="FP32",
        compute="fp32",
        model=run.model_name,
        image_size=run.model.image_size,
        path=str(run_dir),
        params=cost.get("params"),
        flops=cost.get("flops"),
        size_mb=_files_mb(run_dir, [naming.WEIGHTS]),
        macro_auc=(metrics or {}).get("macro_auc"),
        macro_auc_source="run metrics.json (held-out split)" if metrics else None,
        notes=["Conv+BN fused, torch.inference_mode"],
        open=open_,
        reference=True,
        order=0,
        value_range=run.preprocess.value_range,
    )


def cuda_subject(run: RunRecord, cost: dict, group: str) -> Subject:
    s = Subject(
        key=f"{group}::pytorch-cuda-bf16",
        group=group,
        backend="PyTorch CUDA",
        precision="bf16 autocast",
        compute="bf16",
        model=run.model_name,
        image_size=run.model.image_size,
        path=str(run.path),
        params=cost.get("params"),
        flops=cost.get("flops"),
        size_mb=_files_mb(run.path, [naming.WEIGHTS]),
        order=1000,
        value_range=run.preprocess.value_range,
    )
    ok, reason = torch_side.cuda_status()
    if not ok:
        s.status, s.reason = UNAVAILABLE, reason
        return s

    def open_(threads: int):
        model = torch_side.deployed_graph(torch_side.load_run_model(run)).to("cuda")
        notes = [f"{torch_side.gpu_name()}; input already on the GPU"]
        return torch_side.model_bind(model, "cuda", "bfloat16"), {"notes": notes}

    s.open = open_
    return s


# --------------------------------------------------------------------------- artifacts


def _artifact_meta(art: Artifact, group: str) -> dict:
    m = art.manifest
    drift = m.drift or {}
    return dict(
        group=group,
        model=m.model_id,
        image_size=m.preprocess.image_size,
        path=str(art.path),
        params=m.params,
        flops=m.flops,
        size_mb=_files_mb(art.path, m.files.keys()),
        macro_auc=drift.get("macro_auc_new"),
        worst_delta=drift.get("worst_delta"),
        worst_label=drift.get("worst_label"),
        macro_auc_source=f"drift gate ({drift.get('n_images')} held-out images)" if drift else None,
        value_range=m.preprocess.value_range,
    )


def _rejection(d: dict) -> str:
    """One line on why the drift gate refused an export."""
    if not d:
        return "drift gate failed"
    reasons = d.get("reasons") or []
    if not reasons:
        return "drift gate failed"
    more = f" (+{len(reasons) - 2} more)" if len(reasons) > 2 else ""
    return f"drift gate failed on the held-out split: {'; '.join(reasons[:2])}{more}"


def _engine_open(art: Artifact, spec: BackendSpec, precision_override=None, use_override=False):
    def open_(threads: int):

        eng = open_engine(art, threads, precision=precision_override) if use_override else open_engine(art, threads)
        info = {"notes": [f"executed: {eng.describe()}"]}
        if getattr(eng, "inference_precision", None):
            info["inference_precision"] = eng.inference_precision
        # An engine that can time its own device-side call (TensorRT) offers bind(); else run().
        bind = getattr(eng, "bind", None) or (lambda x: lambda: eng.run(x))
        return bind, info

    return open_


def artifact_subjects(
    path: Path, group: str, rejected: bool = False, *, allow_rejected: bool = False, trust=None
) -> list[Subject]:
    """Rows for one artifact folder: one per artifact, plus the variants its backend declares
    (an OpenVINO FP32 IR also at the CPU's default precision). An artifact whose drift gate
    failed is a row that says so; it is timed only with ``allow_rejected``."""

    path = Path(path)
    try:
        art = load_artifact(path, allow_rejected=True, trust=trust)  # the verdict becomes the row's status
        rejected = rejected or not art.gate_passed
        spec = for_runtime(art.runtime)
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
    meta = _artifact_meta(art, group)
    precision = m.export_precision
    status = REJECTED if rejected else PASS
    reason = _rejection(m.drift or {}) if rejected else None
    if rejected and not allow_rejected:
        reason = f"{reason}; not timed (--allow-rejected times it, for investigation)"
    elif rejected:
        reason = f"{reason}; timed with --allow-rejected, for investigation only"
    fixed = f", static batch {m.static_batch}" if m.static_batch else ""
    label = precision.label + (spec.bench_label(m.precision) if spec.bench_label else "") + fixed
    order = spec.order + list(Precision).index(precision)
    row = Subject(
        key=str(path),
        backend=spec.display,
        precision=label,
        compute=precision.compute,
        status=status,
        reason=reason,
        open=_engine_open(art, spec) if allow_rejected or not rejected else None,
        order=order,
        **meta,
    )
    row.notes.append(f"signature: {art.provenance.describe()}")
    gated_with = m.export.gated_with
    if gated_with and gated_with != m.runtime:
        row.notes.append(f"AUC from the drift gate, gated with the {gated_with}")
    elif spec.gate_runtime and not gated_with:  # artifacts from before gated_with was recorded
        row.notes.append(f"AUC from the drift gate through {spec.gate_runtime} on the exported file")
    if spec.engine is None:
        row.status, row.reason, row.open = UNAVAILABLE, f"the {spec.name} target has no engine", None
    rows = [row]
    for v in spec.bench_variants(m.precision) if spec.bench_variants else []:
        extra = Subject(
            key=f"{path}::{v.key}",
            backend=spec.display,
            precision=f"{v.label}{fixed}",
            compute=v.compute,
            status=status,
            reason=reason,
            open=_engine_open(art, spec, v.precision_override, True) if allow_rejected or not rejected else None,
            order=order + 5,
            **meta,
        )
        extra.notes.append(v.note)
        rows.append(extra)
    return rows


def placeholder(spec: BackendSpec, precision: Precision, group: str, model: str, reason: str, cost: dict) -> Subject:
    """A row for a GPU target that has no artifact or cannot run here, saying why."""
    return Subject(
        key=f"{group}::{spec.name}-{precision.value}",
        group=group,
        backend=spec.display,
        precision=precision.label,
        compute=precision.compute,
        model=model,
        image_size=None,
        status=UNAVAILABLE,
        reason=reason,
        params=cost.get("params"),
        flops=cost.get("flops"),
        order=spec.order + list(Precision).index(precision),
    )
