"""The CPU's peak FLOP/s per precision: measured with a large GEMM, and in theory.

Measured (on the benchmark's pinned threads; the best of several runs, since load from
other jobs only ever slows a GEMM down):

- fp32: the faster of two square fp32 matmuls, numpy's BLAS (limited to the pinned threads
  through threadpoolctl when that is installed) and torch.mm when torch is installed. Both
  count: on this project's 2-core EPYC torch.mm reaches 174 GFLOP/s and OpenBLAS 216, and
  OpenVINO's own FP32 kernels run M5/224 at 205, so torch alone under-stated the peak;
- bf16: torch.mm on bf16 tensors (oneDNN uses AVX512-BF16/AMX when present), else an
  estimate of 2x fp32 when the CPU has avx512_bf16 (VDPBF16PS does 2 MACs per fp32 lane);
- int8: torch._int_mm (int8 x int8 -> int32 through oneDNN's VNNI kernels), else an
  estimate of 4x fp32 when the CPU has VNNI (VPDPBUSD does 4 u8*s8 MACs per 32-bit lane,
  i.e. 64 per 512-bit instruction against 16 fp32 FMAs).

Theoretical: cores x GHz x FLOPs/cycle, with AVX-512 FMA = 16 fp32 lanes x 2 FLOPs = 32
fp32 FLOPs/cycle per FMA unit. Both the 1-unit and the 2-unit figure are reported; the
headline assumes 2 units (Xeon Gold/Platinum, AMD Zen 4/5 server parts); a 1-unit part
(Xeon Silver/Bronze, most client chips) has half. int8 = 4x and bf16 = 2x the fp32 figure
when the ISA flags are present, else equal to fp32.
"""

from __future__ import annotations

import time

import numpy as np

from mxa_edge.machine import cpu_flags, cpu_ghz

FP32_FLOPS_PER_CYCLE_PER_FMA_UNIT = 32  # AVX-512: 16 fp32 lanes x (multiply + add)
FP32_FLOPS_PER_CYCLE_AVX2_UNIT = 16  # AVX2: 8 lanes x 2


def _best_gflops(fn, n: int, repeats: int) -> float:
    fn()  # first call: allocation, kernel selection
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _numpy_fp32(threads: int, n: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads):
            gf = _best_gflops(lambda: a @ b, n, repeats)
        how = f"numpy fp32 matmul {n}x{n} on {threads} BLAS threads, best of {repeats}"
    except ImportError:
        gf = _best_gflops(lambda: a @ b, n, repeats)
        how = f"numpy fp32 matmul {n}x{n} (BLAS threads not pinned: threadpoolctl missing), best of {repeats}"
    return {"gflops": gf, "method": how}


def measured_peaks(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """{precision: {gflops, method}} for fp32, bf16 and int8 on ``threads`` threads."""
    flags = cpu_flags()
    peaks: dict[str, dict] = {}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g)
            b = torch.randn(n, n, generator=g)
            peaks["fp32"] = {
                "gflops": _best_gflops(lambda: torch.mm(a, b), n, repeats),
                "method": f"torch.mm fp32 {n}x{n}, best of {repeats}",
            }
            ab, bb = a.bfloat16(), b.bfloat16()
            peaks["bf16"] = {
                "gflops": _best_gflops(lambda: torch.mm(ab, bb), n, repeats),
                "method": f"torch.mm bf16 {n}x{n}, best of {repeats}",
            }
            ai = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
            bi = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
            try:
                peaks["int8"] = {
                    "gflops": _best_gflops(lambda: torch._int_mm(ai, bi), n, repeats),
                    "method": f"torch._int_mm int8 {n}x{n}, best of {repeats}",
                }
            except (RuntimeError, AttributeError) as exc:
                peaks["int8_error"] = str(exc).splitlines()[0]
        finally:
            torch.set_num_threads(prev)
    numpy_fp32 = _numpy_fp32(threads, n, repeats)
    if "fp32" not in peaks or numpy_fp32["gflops"] > peaks["fp32"]["gflops"]:
        peaks["fp32"] = numpy_fp32
    fp32 = peaks["fp32"]["gflops"]
    if "bf16" not in peaks:
        k = 2.0 if flags.get("avx512_bf16") or flags.get("amx_bf16") else 1.0
        peaks["bf16"] = {
            "gflops": k * fp32,
            "method": f"estimated: {k:g} x measured fp32 (avx512_bf16={flags.get('avx512_bf16')})",
        }
    if "int8" not in peaks:
        k = 4.0 if flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8") else 1.0
        peaks["int8"] = {"gflops": k * fp32, "method": f"estimated: {k:g} x measured fp32 (VNNI={k > 1})"}
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
