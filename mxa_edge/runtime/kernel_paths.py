"""Run a model on another CPU class's INT8 kernels from this machine (torch-free).

An INT8 model's arithmetic depends on the kernels the runtime picks, and the runtimes pick them
from CPUID: ONNX Runtime's MLAS and oneDNN (OpenVINO) take the saturating ``VPMADDUBSW`` path
on every x86 CPU without VNNI. An artifact gated on a VNNI build machine must therefore also be
run on that path before it is published (``export``), and ``verify`` must be able to say which
classes an artifact was checked on.

The AVX2 harness is ``qemu-x86_64 -cpu Haswell`` (Debian's ``qemu-user``): the process sees an
AVX2 + FMA CPUID with no AVX-512 and no VNNI, so every library dispatches as on a real AVX2
workstation. ``ONEDNN_MAX_CPU_ISA=AVX2`` is not a substitute: it restricts oneDNN only and
never reaches MLAS. ``/proc/cpuinfo`` still lists the host's flags under qemu, which is why
``machine.cpu_flags`` reads CPUID too.

    python -m mxa_edge.runtime.kernel_paths exec -- CMD ...   # CMD with an AVX2-only CPUID
    benchmarks/as_avx2.sh CMD ...                             # the same, for people

A VNNI path cannot be reached from an AVX2 machine (QEMU 7.2's TCG has no AVX-512); there the
``PORTABLE`` scheme's static bound (every int8 weight within 7 bits: no pair sum can saturate)
is what an export records for the VNNI class.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mxa_edge.runtime.engines import open_model_file

# Haswell without the features QEMU's TCG cannot emulate (it warns about each on every start).
QEMU_AVX2 = ("qemu-x86_64", "-cpu", "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm")
QEMU_HINT = "install Debian's qemu-user (apt-get install qemu-user) for qemu-x86_64"
RUN_TIMEOUT_S = 900


def avx2_prefix() -> list[str] | None:
    """argv prefix that runs a command with an AVX2-only CPUID, or None where qemu is missing."""
    qemu = shutil.which(QEMU_AVX2[0])
    return [qemu, *QEMU_AVX2[1:]] if qemu else None


def avx2_description() -> str:
    return " ".join(QEMU_AVX2[:2]) + " Haswell"


def run_on_avx2(model: Path, runtime: str, precision: str | None, x: np.ndarray, outputs=("logits", "features")):
    """The model's outputs on ``x`` (float32 model input) computed by a child process that sees
    an AVX2-only CPU, and the INT8 kernel class that process detected. Returns None (with the
    reason) where the harness is missing; raises RuntimeError when the child fails."""
    prefix = avx2_prefix()
    if prefix is None:
        return None, f"qemu-x86_64 not found: {QEMU_HINT}"
    with tempfile.TemporaryDirectory(prefix="mxa-avx2-") as tmp:
        src, dst = Path(tmp) / "x.npy", Path(tmp) / "out.npz"
        np.save(src, np.ascontiguousarray(x, np.float32))
        cmd = [
            *prefix,
            sys.executable,
            "-m",
            "mxa_edge.runtime.kernel_paths",
            "run",
            str(model),
            runtime,
            precision or "-",
            str(src),
            str(dst),
            ",".join(outputs),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_child_env())
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the AVX2 harness run failed (exit {done.returncode}): {tail[0]}")
        with np.load(dst, allow_pickle=False) as data:
            result = {k: np.asarray(data[k]) for k in data.files}
    kernel_class = str(result.pop("_kernel_class"))
    return (result, kernel_class), None


def _child_env() -> dict:
    env = dict(os.environ)
    # One thread: the emulated run is deterministic and does not compete with the parent.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(model: str, runtime: str, precision: str, src: str, dst: str, outputs: str) -> None:
    from mxa_edge.support.machine import int8_kernel_class

    engine = open_model_file(model, runtime, threads=1, precision=None if precision == "-" else precision)
    got = engine.run(np.load(src, allow_pickle=False))
    keep = {k: np.asarray(v) for k, v in got.items() if k in outputs.split(",")}
    tmp = dst + ".partial.npz"
    np.savez(tmp, _kernel_class=np.array(int8_kernel_class()), **keep)
    os.replace(tmp, dst)


def _resolve_script(cmd: list[str]) -> list[str]:
    """qemu-user loads ELF binaries only: a ``#!`` script (an installed console entry point such
    as ``mxa-edge``) is run through its interpreter, as the kernel would."""
    path = shutil.which(cmd[0]) or cmd[0]
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return cmd
    if not first.startswith(b"#!"):
        return [path, *cmd[1:]]
    interpreter = first[2:].decode(errors="replace").strip().split()
    return [*interpreter, path, *cmd[1:]]


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and len(argv) == 7:
        _run(*argv[1:])
        return 0
    if argv[:1] == ["exec"]:
        cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        prefix = avx2_prefix()
        if prefix is None:
            print(f"error: qemu-x86_64 not found: {QEMU_HINT}", file=sys.stderr)
            return 2
        if not cmd:
            print("usage: python -m mxa_edge.runtime.kernel_paths exec -- CMD ...", file=sys.stderr)
            return 2
        os.execvp(prefix[0], [*prefix, *_resolve_script(cmd)])
    print(
        "usage: python -m mxa_edge.runtime.kernel_paths exec -- CMD ...\n"
        "       python -m mxa_edge.runtime.kernel_paths run MODEL RUNTIME PRECISION IN.npy OUT.npz OUTPUTS",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
