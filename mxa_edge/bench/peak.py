"""The CPU's peak FLOP/s per precision: measured with a large GEMM, and in theory.

Measured (on the benchmark's pinned threads; the best of several runs, since load from other
jobs only ever slows a GEMM down), with kernels that exist on every x86 ISA, each probe capped
at about a second (``PROBE_SECONDS``, first call included; fp32's two candidates share it) so that an
AVX2-only machine costs seconds, not minutes (2.4-2.7 s in all with ``ONEDNN_MAX_CPU_ISA=AVX2``, 2 threads,
load average 4.7):

- fp32: the faster of numpy's BLAS (pinned through threadpoolctl when installed) and torch.mm
  when torch is installed (on a 2-core EPYC torch.mm reached 174 GFLOP/s and OpenBLAS 216);
- int8: ONNX Runtime's ``MatMulInteger`` (u8 x s8 -> s32), whose MLAS kernels use VNNI
  (VPDPBUSD) where present and AVX2 ``vpmaddubsw`` otherwise: the integer GEMM an INT8
  artifact actually runs on. ``torch._int_mm`` is never used: it has no fast CPU path on AVX2
  (1.3-1.9 GFLOP/s measured on an AVX2-only EPYC, minutes per bench);
- bf16: ``torch.mm`` on bf16 tensors only when the CPU has AVX512-BF16 or AMX-BF16, and only
  after a small probe shows oneDNN really runs it fast (``ONEDNN_MAX_CPU_ISA=AVX2`` takes the
  fast path away while the flags stay); otherwise estimated (2x fp32 with those flags, else 1x).
Each entry says which method produced it.

Theoretical: cores x GHz x FLOPs/cycle, with AVX-512 FMA = 16 fp32 lanes x 2 FLOPs = 32
fp32 FLOPs/cycle per FMA unit. Both the 1-unit and the 2-unit figure are reported; the
headline assumes 2 units (Xeon Gold/Platinum, AMD Zen 4/5 server parts); a 1-unit part
(Xeon Silver/Bronze, most client chips) has half. int8 = 4x and bf16 = 2x the fp32 figure
when the ISA flags are present, else equal to fp32.
"""

from __future__ import annotations

import time

import numpy as np

from mxa_edge import torch_side
from mxa_edge.support.machine import cpu_flags, cpu_ghz

FP32_FLOPS_PER_CYCLE_PER_FMA_UNIT = 32  # AVX-512: 16 fp32 lanes x (multiply + add)
FP32_FLOPS_PER_CYCLE_AVX2_UNIT = 16  # AVX2: 8 lanes x 2
PROBE_SECONDS = 1.0  # wall-clock cap per precision (after the first call)


def _best_gflops(fn, n: int, repeats: int, budget: float = PROBE_SECONDS) -> float:
    """Best rate over up to ``repeats`` calls, stopping once ``budget`` seconds are spent.

    The first call (allocation, kernel selection) counts against the budget too, and is a
    sample like the others (taking the best, a slow first call costs nothing in accuracy):
    on a CPU without a fast kernel one call can take seconds, and the budget must hold there.
    """
    best, spent = 0.0, 0.0
    for _ in range(repeats + 1):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent = max(best, 2.0 * n**3 / dt / 1e9), spent + dt
        if spent > budget:
            break
    return best


def _numpy_fp32(threads: int, n: int, repeats: int, budget: float = PROBE_SECONDS) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads):
            gf = _best_gflops(lambda: a @ b, n, repeats, budget)
        how = f"numpy fp32 matmul {n}x{n} on {threads} BLAS threads, best of up to {repeats}"
    except ImportError:
        gf = _best_gflops(lambda: a @ b, n, repeats, budget)
        how = f"numpy fp32 matmul {n}x{n} (BLAS threads not pinned: threadpoolctl missing), best of up to {repeats}"
    return {"gflops": gf, "method": how}


def _ort_int8(threads: int, n: int, repeats: int) -> dict | None:
    """ONNX Runtime MatMulInteger u8 x s8 -> s32 on an n x n problem; None without onnx/ORT."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_peak",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.integers(0, 256, (n, n), dtype=np.uint8),
        "b": rng.integers(-128, 128, (n, n), dtype=np.int8),
    }
    gf = _best_gflops(lambda: sess.run(None, feeds), n, repeats)
    return {"gflops": gf, "method": f"onnxruntime MatMulInteger u8 x s8 {n}x{n} (MLAS), best of up to {repeats}"}


def _torch_bf16(n: int, repeats: int, fp32_gflops: float) -> dict | None:
    """torch.mm bf16, only after a 256x256 probe shows a fast path (>= half the fp32 rate)."""
    probe = _best_gflops(torch_side.gemm(256, "bfloat16"), 256, 3, budget=0.2)
    if probe < 0.5 * fp32_gflops * (256 / n) ** 0.5:  # small GEMMs run below peak: a loose bar
        return None
    gf = _best_gflops(torch_side.gemm(n, "bfloat16"), n, repeats)
    return {"gflops": gf, "method": f"torch.mm bf16 {n}x{n}, best of up to {repeats}"}


def measured_peaks(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """{precision: {gflops, method, seconds}} for fp32, bf16 and int8 on ``threads`` threads."""
    flags = cpu_flags()
    peaks: dict[str, dict] = {}
    has_torch = torch_side.installed()
    t0 = time.perf_counter()
    if has_torch:
        prev = torch_side.get_threads()
        torch_side.set_threads(threads)
        try:
            peaks["fp32"] = {
                # fp32 has two candidates: each gets half the probe's budget
                "gflops": _best_gflops(torch_side.gemm(n, "float32"), n, repeats, PROBE_SECONDS / 2),
                "method": f"torch.mm fp32 {n}x{n}, best of up to {repeats}",
            }
        finally:
            torch_side.set_threads(prev)
    numpy_fp32 = _numpy_fp32(threads, n, repeats, PROBE_SECONDS / 2 if has_torch else PROBE_SECONDS)
    if "fp32" not in peaks or numpy_fp32["gflops"] > peaks["fp32"]["gflops"]:
        peaks["fp32"] = numpy_fp32
    fp32 = peaks["fp32"]["gflops"]
    peaks["fp32"]["seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    has_bf16 = bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    if has_torch and has_bf16:
        prev = torch_side.get_threads()
        torch_side.set_threads(threads)
        try:
            measured = _torch_bf16(n, repeats, fp32)
        finally:
            torch_side.set_threads(prev)
        if measured is not None:
            peaks["bf16"] = measured
    if "bf16" not in peaks:
        k = 2.0 if has_bf16 else 1.0
        why = (
            "no fast bf16 GEMM here (oneDNN restricted, e.g. ONEDNN_MAX_CPU_ISA, or torch missing)"
            if has_bf16
            else "no AVX512-BF16/AMX-BF16 on this CPU"
        )
        peaks["bf16"] = {"gflops": k * fp32, "method": f"estimated: {k:g} x measured fp32 ({why})"}
    peaks["bf16"]["seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    measured = _ort_int8(threads, n, repeats)
    if measured is not None:
        peaks["int8"] = measured
    else:
        k = 4.0 if flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8") else 1.0
        peaks["int8"] = {
            "gflops": k * fp32,
            "method": f"estimated: {k:g} x measured fp32 (VNNI={k > 1}; onnx not installed to measure)",
        }
    peaks["int8"]["seconds"] = time.perf_counter() - t0
    return peaks


def theoretical_peaks(cores: int) -> dict:
    flags = cpu_flags()
    ghz, source = cpu_ghz()
    if flags.get("avx512f"):
        per_unit, isa = FP32_FLOPS_PER_CYCLE_PER_FMA_UNIT, "AVX-512 FMA"
    elif flags.get("avx2") and flags.get("fma"):
        per_unit, isa = FP32_FLOPS_PER_CYCLE_AVX2_UNIT, "AVX2 FMA"
    else:
        per_unit, isa = 8, "SSE (no FMA)"
    if ghz is None:
        return {"available": False, "reason": "CPU clock unknown"}
    fp32_2 = cores * ghz * per_unit * 2
    int8_k = 4.0 if flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8") else 1.0
    bf16_k = 2.0 if flags.get("avx512_bf16") or flags.get("amx_bf16") else 1.0
    return {
        "available": True,
        "assumption": f"cores={cores} x {ghz:.2f} GHz ({source}) x {per_unit} fp32 FLOPs/cycle per {isa} unit x 2 "
        "units; "
        f"a 1-unit CPU has half (fp32 {fp32_2 / 2:.0f} GFLOP/s). int8 x{int8_k:g} (VNNI), bf16 "
        f"x{bf16_k:g} (AVX512-BF16). "
        "AMX, where present, is not counted.",
        "fp32": fp32_2,
        "bf16": fp32_2 * bf16_k,
        "int8": fp32_2 * int8_k,
        "fp32_one_fma_unit": fp32_2 / 2,
    }


def compute_bound(threads: int, quick: bool = False) -> dict:
    """Measured and theoretical peaks; ``quick`` uses a smaller GEMM (tests)."""
    n, repeats = (1024, 3) if quick else (2048, 5)
    return {
        "threads": threads,
        "measured": measured_peaks(threads, n, repeats),
        "theoretical": theoretical_peaks(threads),
    }
