"""Where the time goes: a per-op profile of one model file, by op type and by scope.

ONNX Runtime: the session's own profiler (``enable_profiling``; one ``Node`` event per
executed kernel, with its op type). OpenVINO: the infer request's performance counters
(``PERF_COUNT``; one entry per executed primitive, with its layer type and kernel). Both
report the share of each op type and of the MXA block's scope (node names keep the ONNX
module scopes, ``/mxa/``), averaged over ``runs`` calls after a warm-up. Torch-free.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from mxa_edge.support.telemetry import disable_telemetry

MXA_SCOPE = "/mxa/"


def _summary(per_node: list[tuple[str, str, float]], runs: int, top: int) -> dict:
    """(node name, op type, total microseconds) -> shares by op type and by MXA scope."""
    by_type: dict[str, float] = defaultdict(float)
    mxa_us = 0.0
    for name, op, us in per_node:
        by_type[op] += us
        if MXA_SCOPE in name:
            mxa_us += us
    total = sum(by_type.values()) or 1.0
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])
    return {
        "ms_per_call": total / runs / 1e3,
        "mxa_ms_per_call": mxa_us / runs / 1e3,
        "mxa_share": mxa_us / total,
        "by_op_type": [{"op": op, "ms": us / runs / 1e3, "share": us / total} for op, us in ranked[:top]],
        "kernels": len({n for n, _, _ in per_node}),
    }


def profile_ort(model_path: Path, batch: np.ndarray, threads: int, runs: int = 20, top: int = 12) -> dict:
    """Per-op profile of an ONNX model on ONNX Runtime's CPU provider (the engine's settings)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mxa-ort-profile-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: batch}
        warm = 3
        for _ in range(warm + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    # The warm-up calls (allocations, kernel selection) are in the trace too: keep the node
    # events that start after the last warm-up call ended.
    run_ends = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    after = run_ends[warm - 1] if len(run_ends) >= warm else -1
    per_node = [
        (e["name"], e["args"].get("op_name", "?"), float(e["dur"]))
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > after
    ]
    return _summary(per_node, runs, top)


def profile_openvino(
    model_path: Path, batch: np.ndarray, threads: int, precision: str | None = "f32", runs: int = 20, top: int = 12
) -> dict:
    """Per-op profile of an OpenVINO IR (or ONNX file) on the CPU plugin, latency settings."""

    disable_telemetry()
    import openvino as ov

    config = {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads), "PERF_COUNT": "YES"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(model_path), "CPU", config)
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: batch})
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: batch})
        for p in request.get_profiling_info():
            if p.status == p.Status.EXECUTED:
                totals[(p.node_name, f"{p.node_type}:{p.exec_type}")] += p.real_time.total_seconds() * 1e6
    per_node = [(name, op.split(":")[0], us) for (name, op), us in totals.items()]
    summary = _summary(per_node, runs, top)
    # The kernel names (jit_avx512_I8 vs ref_any) tell whether a layer really ran in int8.
    by_kernel: dict[str, float] = defaultdict(float)
    for (_, op), us in totals.items():
        by_kernel[op] += us
    total = sum(by_kernel.values()) or 1.0
    summary["by_kernel"] = [
        {"kernel": k, "ms": us / runs / 1e3, "share": us / total}
        for k, us in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:top]
    ]
    return summary


def format_profile(title: str, prof: dict) -> str:
    lines = [
        f"{title}: {prof['ms_per_call']:.2f} ms of kernels per call, MXA scope {prof['mxa_ms_per_call']:.2f} ms "
        f"({prof['mxa_share']:.0%}), {prof['kernels']} kernels"
    ]
    lines.append("  " + ", ".join(f"{r['op']} {r['ms']:.2f} ({r['share']:.0%})" for r in prof["by_op_type"]))
    return "\n".join(lines)
