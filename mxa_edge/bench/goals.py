"""The speed goals of issue 17, as ratios from one bench run, on the machine it ran on.

Per model (row group), from rows measured side by side in the same interleaved rounds:

- ``int8_vs_pytorch``: the fastest gated INT8 artifact's batch-1 latency against PyTorch
  eager FP32 (paired round by round), target >= 4;
- ``int8_throughput_vs_bound``: that artifact's throughput at the largest batch as a share
  of the INT8 compute bound (model FLOPs / the measured INT8 GEMM peak), target >= 1/3;
- ``int8_vs_float``: the fastest gated INT8 artifact against the fastest gated float one at
  batch 1, target >= 1.5 on a CPU with VNNI (elsewhere reported with no target: INT8 is not
  expected to win there, and ``fastest`` names what to deploy);
- ``mxa_overhead``: not measurable from one run (it needs the same model without MXA):
  reported as such, with the command that measures it.

"Gated" means exported and passed its drift gate at the arithmetic it ran (the rows
``fastest`` chooses from). A goal with no such row has ``value`` None and ``met`` False.
"""

from __future__ import annotations

from mxa_edge.bench import subjects as S
from mxa_edge.support.machine import cpu_flags, isa_line

INT8_VS_PYTORCH = 4.0
INT8_SHARE_OF_BOUND = 1.0 / 3.0
INT8_VS_FLOAT_VNNI = 1.5
MXA_OVERHEAD_MAX = 0.10
MXA_COMMAND = "python benchmarks/mxa_overhead.py --model {variant} --image-size {size} --threads {threads}"


def _gated(row: dict) -> bool:
    return (
        row["status"] == S.PASS
        and row["p50_ms"] is not None
        and row.get("path") is not None
        and not row["backend"].startswith("PyTorch")
        and "CPU default" not in row["precision"]
        and row.get("macro_auc") is not None
    )


def _goal(value, target, compares: str, *, at_least: bool = True, note: str | None = None) -> dict:
    met = None if target is None else (value is not None and (value >= target if at_least else value <= target))
    out = {"value": value, "target": target, "met": met, "compares": compares}
    if note:
        out["note"] = note
    return out


def _name(row: dict | None) -> str | None:
    return f"{row['backend']} {row['precision']}" if row else None


def _mxa_command(rows: list[dict], threads: int | None) -> str:
    """The overhead command for this group's model (variant and size read off its rows)."""
    import re

    variant = next((m.group(1) for r in rows if (m := re.search(r"-(m\d)\b", str(r.get("model"))))), "MODEL")
    size = next((r["image_size"] for r in rows if r.get("image_size")), "SIZE")
    return MXA_COMMAND.format(variant=variant, size=size, threads=threads or "N")


def goal_ratios(
    rows: list[dict], latency_batch: int, throughput_batch: int, flags: dict | None = None, threads: int | None = None
) -> dict:
    """{group: {"isa": ..., "int8": row name, "float": row name, goal name: goal}}."""
    flags = cpu_flags() if flags is None else flags
    vnni = bool(flags.get("avx512_vnni") or flags.get("avx_vnni"))
    out: dict = {}
    groups = dict.fromkeys(r["group"] for r in rows)
    for group in groups:
        mine = [r for r in rows if r["group"] == group and _gated(r)]
        int8 = min((r for r in mine if r["compute"] == "int8"), key=lambda r: r["p50_ms"], default=None)
        flt = min((r for r in mine if r["compute"] != "int8"), key=lambda r: r["p50_ms"], default=None)
        none = "no gated INT8 artifact was measured" if int8 is None else None
        ratio_float = flt["p50_ms"] / int8["p50_ms"] if int8 and flt else None
        out[group] = {
            "isa": isa_line(flags),
            "int8": _name(int8),
            "float": _name(flt),
            "int8_vs_pytorch": _goal(
                int8 and int8.get("speedup"),
                INT8_VS_PYTORCH,
                f"PyTorch eager FP32 p50 / fastest gated INT8 p50 at batch {latency_batch} (paired per round)",
                note=none,
            ),
            "int8_throughput_vs_bound": _goal(
                int8 and int8.get("fraction_of_peak"),
                INT8_SHARE_OF_BOUND,
                f"its img/s at batch {throughput_batch} x model FLOPs / the measured INT8 GEMM peak",
                note=none,
            ),
            "int8_vs_float": _goal(
                ratio_float,
                INT8_VS_FLOAT_VNNI if vnni else None,
                f"fastest gated float p50 / fastest gated INT8 p50 at batch {latency_batch}",
                note=None
                if vnni
                else "no VNNI on this CPU: INT8 is not expected to beat float here; `fastest` names what to deploy",
            ),
            "mxa_overhead": _goal(
                None,
                MXA_OVERHEAD_MAX,
                "batch-1 latency with MXA / without MXA - 1, per backend",
                at_least=False,
                note=f"needs the same model without MXA: measured by `{_mxa_command(mine or rows, threads)}`",
            ),
        }
        out[group]["mxa_overhead"]["met"] = None  # not measured by this run
    return out
