"""The machine: CPU model, cores, ISA flags, RAM, OS, library versions, GPU, and the ISA line
and fingerprint that bench, export and verify record.

Stdlib only (psutil and torch are used when already importable, never required), so the
light runtime install can record its machine too.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from mxa_edge import torch_side

# ISA extensions that decide which kernels the runtimes pick.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
LIBRARIES = ("numpy", "torch", "onnxruntime", "openvino", "nncf", "onnx", "tensorrt", "mxa-edge")


def _cpuinfo() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per logical CPU (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        cpus.append(entry)
    return cpus


def physical_cores() -> int:
    """Physical cores (hyperthreads not counted): psutil when present, else /proc/cpuinfo."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    cpus = _cpuinfo()
    cores = {(c.get("physical id", "0"), c.get("core id", c.get("processor"))) for c in cpus}
    return len(cores) or os.cpu_count() or 1


# (leaf, subleaf, register, bit) of each flag in CPUID, as the kernel's /proc/cpuinfo names it.
_CPUID_BITS = {
    "fma": (1, 0, "ecx", 12),
    "avx2": (7, 0, "ebx", 5),
    "avx512f": (7, 0, "ebx", 16),
    "avx512_vnni": (7, 0, "ecx", 11),
    "amx_bf16": (7, 0, "edx", 22),
    "amx_tile": (7, 0, "edx", 24),
    "amx_int8": (7, 0, "edx", 25),
    "avx_vnni": (7, 1, "eax", 4),
    "avx512_bf16": (7, 1, "eax", 5),
}
# x86-64 System V: cpuid(leaf=edi, subleaf=esi, uint32 out[4]=rdx); rbx is callee-saved.
_CPUID_CODE = bytes.fromhex("534989d089f889f10fa241890041895804418948084189500c5bc3")


@functools.lru_cache(maxsize=1)
def cpuid_flags() -> dict[str, bool] | None:
    """FLAGS as the CPUID instruction reports them to this process, or None off x86-64 (or
    where executable memory is refused).

    Why CPUID and not only /proc/cpuinfo: the runtimes' kernels dispatch on CPUID (ONNX
    Runtime's MLAS, oneDNN), and what a process is shown can differ from the kernel's list:
    under ``qemu-x86_64 -cpu Haswell`` (the AVX2 harness) /proc/cpuinfo still lists the
    host's AVX-512 and VNNI while every library sees an AVX2-only CPU.
    """
    import ctypes
    import mmap

    if platform.machine().lower() not in ("x86_64", "amd64") or not hasattr(mmap, "PROT_EXEC"):
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None
    page.write(_CPUID_CODE)
    regs = ctypes.c_uint32 * 4
    call = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(regs))(
        ctypes.addressof(ctypes.c_char.from_buffer(page))
    )

    def cpuid(leaf: int, subleaf: int) -> dict[str, int]:
        out = regs()
        call(leaf, subleaf, ctypes.byref(out))
        return dict(zip(("eax", "ebx", "ecx", "edx"), out))

    max_leaf = cpuid(0, 0)["eax"]
    leaves = {(leaf, sub): cpuid(leaf, sub) for leaf, sub in {(1, 0), (7, 0), (7, 1)} if leaf <= max_leaf}
    page.close()  # after the last call through it
    return {
        name: bool((leaves.get((leaf, sub), {}).get(reg, 0) >> bit) & 1)
        for name, (leaf, sub, reg, bit) in _CPUID_BITS.items()
    }


def cpu_flags() -> dict[str, bool]:
    """The kernel-relevant ISA flags this process can use: a flag counts when CPUID reports it
    AND the kernel lists it in /proc/cpuinfo (the kernel drops a flag whose register state the
    OS does not save, e.g. AVX-512 disabled in XCR0). Either source alone where the other is
    missing."""
    cpus = _cpuinfo()
    listed = set((cpus[0].get("flags") or "").split()) if cpus else None
    reported = cpuid_flags()
    out = {}
    for f in FLAGS:
        if listed is not None and reported is not None:
            out[f] = f in listed and reported.get(f, False)
        elif reported is not None:
            out[f] = reported.get(f, False)
        else:
            out[f] = f in (listed or set())
    return out


def int8_kernel_class(flags: dict[str, bool] | None = None) -> str:
    """Which family of x86 INT8 kernels this CPU runs (what decides INT8 arithmetic):
    ``amx``, ``avx512-vnni``, ``avx-vnni`` (AVX2 with VNNI), ``avx512`` (no VNNI: the saturating
    ``VPMADDUBSW`` path), ``avx2`` (the same path, 256-bit), or ``other``."""
    f = cpu_flags() if flags is None else flags
    if f.get("amx_int8"):
        return "amx"
    if f.get("avx512f") and f.get("avx512_vnni"):
        return "avx512-vnni"
    if f.get("avx_vnni"):
        return "avx-vnni"
    if f.get("avx512f"):
        return "avx512"
    if f.get("avx2"):
        return "avx2"
    return "other"


# INT8 kernel classes whose u8 x s8 products are summed without int16 saturation.
VNNI_CLASSES = ("amx", "avx512-vnni", "avx-vnni")


def cpu_ghz() -> tuple[float | None, str]:
    """Clock in GHz and where it came from: the max frequency in sysfs when exposed,
    else /proc/cpuinfo's current 'cpu MHz' (a VM usually reports the nominal clock there)."""
    sysfs = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(sysfs.read_text()) / 1e6, "sysfs cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    cpus = _cpuinfo()
    try:
        return float(cpus[0]["cpu MHz"]) / 1000.0, "/proc/cpuinfo cpu MHz"
    except (IndexError, KeyError, ValueError):
        return None, "unknown"


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_record() -> dict:
    cpus = _cpuinfo()
    ghz, ghz_source = cpu_ghz()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = None
    return {
        "cpu_model": (cpus[0].get("model name") if cpus else None) or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": affinity,
        "cpu_ghz": ghz,
        "cpu_ghz_source": ghz_source,
        "flags": cpu_flags(),
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {dist: _version(dist) for dist in LIBRARIES},
        "gpu": torch_side.gpu_name(),  # the CUDA device torch sees (None without torch or a GPU)
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def isa_line(flags: dict[str, bool] | None = None) -> str:
    """The CPU's kernel-relevant ISA in one line: AVX2 / AVX-512 / VNNI / AMX / bf16."""
    f = cpu_flags() if flags is None else flags
    parts = ["AVX-512" if f.get("avx512f") else "AVX2" if f.get("avx2") else "no AVX2"]
    if f.get("fma"):
        parts.append("FMA")
    if f.get("avx512_vnni") or f.get("avx_vnni"):
        parts.append("VNNI")
    if f.get("avx512_bf16"):
        parts.append("bf16")
    if f.get("amx_tile"):
        parts.append("AMX")
    missing = [n for n, k in (("AVX-512", "avx512f"), ("VNNI", "avx512_vnni")) if not f.get(k)]
    if n := [m for m in missing if not (m == "VNNI" and f.get("avx_vnni"))]:
        return " + ".join(parts) + f" (no {', no '.join(n)})"
    return " + ".join(parts)


def machine_fingerprint() -> dict:
    """What decides the kernels an artifact runs with here: CPU model, ISA, runtime versions
    (stdlib only: on the runtime path)."""
    import hashlib
    import json

    cpus = _cpuinfo()
    facts = {
        "cpu_model": (cpus[0].get("model name") if cpus else None) or platform.processor() or None,
        "flags": cpu_flags(),
        "versions": {dist: _version(dist) for dist in ("onnxruntime", "openvino", "numpy", "mxa-edge")},
    }
    facts["id"] = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return facts
