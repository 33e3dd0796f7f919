#!/usr/bin/env bash
# Run a command on an AVX2-only CPU (no AVX-512, no VNNI), whatever this machine is:
#   benchmarks/as_avx2.sh .venv/bin/mxa-edge verify runs/default/exports/onnx-int8
# qemu-x86_64 -cpu Haswell (Debian: apt-get install qemu-user) shows the process an AVX2 + FMA
# CPUID, so ONNX Runtime's MLAS and oneDNN pick their AVX2 kernels, as on a real AVX2
# workstation (ONEDNN_MAX_CPU_ISA=AVX2 restricts oneDNN only). Emulated: expect 5-50x slower.
# /proc/cpuinfo still shows the host's flags; mxa-edge reads CPUID (mxa_edge/support/machine.py).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" -m mxa_edge.runtime.kernel_paths exec -- "$@"
