"""The machine: CPU model, cores, ISA flags, RAM, OS, library versions, GPU, and the ISA line
and fingerprint that bench, export and verify record.

Stdlib only (psutil and torch are used when already importable, never required), so the
light runtime install can record its machine too.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

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


def cpu_flags() -> dict[str, bool]:
    cpus = _cpuinfo()
    flags = set((cpus[0].get("flags") or "").split()) if cpus else set()
    return {f: f in flags for f in FLAGS}


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


def gpu_name() -> str | None:
    """The CUDA device's name when torch is installed and sees one; None otherwise."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


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
        "gpu": gpu_name(),
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
