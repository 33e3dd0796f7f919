"""Benchmarks of a run and its exported artifacts across backends (``mxa-edge bench``).

Light at import: torch is imported only when a PyTorch row is opened, so ONNX Runtime and
OpenVINO rows work on the runtime-only install.

    from mxa_edge.bench import run_bench
    result = run_bench(["runs/m0"], batches=(1, 8), seconds=3)   # {settings, machine, compute_bound, rows}
"""

from mxa_edge.bench.peak import compute_bound
from mxa_edge.bench.plot import plot_latency_auc
from mxa_edge.bench.runner import collect_subjects, run_bench
from mxa_edge.bench.subjects import FAILED, PASS, REJECTED, UNAVAILABLE
from mxa_edge.support.machine import machine_record, physical_cores

__all__ = [
    "FAILED",
    "PASS",
    "REJECTED",
    "UNAVAILABLE",
    "collect_subjects",
    "compute_bound",
    "machine_record",
    "physical_cores",
    "plot_latency_auc",
    "run_bench",
]
