"""Backends against each other on one run: PyTorch, ONNX Runtime, OpenVINO, FP32 vs INT8.

    python benchmarks/backends.py RUN [RUN ...] [--batch 1,8] [--threads N] [--seconds 3] [--json OUT]

Calls ``mxa_edge.bench.run_bench`` (the library behind ``mxa-edge bench``): every backend
of the run, the missing standard exports created first (drift-gated with the export
defaults; a rejected one is still measured and flagged), all rows interleaved in rounds on
the same pinned threads so load from other jobs hits them alike. Prints, per row, the
median batch-1 latency and large-batch throughput as RATIOS measured side by side in the
same run: against PyTorch eager FP32 (paired round by round), INT8 against FP32 within each
runtime, and OpenVINO's CPU-default precision (bf16 where the CPU has it) against its f32
hint; then the best INT8 backend's fraction of the compute bound.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mxa_edge.bench import run_bench
from mxa_edge.support.progress import Reporter


class _Log(Reporter):
    def log(self, message: str) -> None:
        print(f"· {message}", file=sys.stderr)


def _find(rows, backend, compute, group):
    for r in rows:
        if r["group"] == group and r["backend"] == backend and r["compute"] == compute and r["status"] == "pass":
            return r
    return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write run_bench's full result here")
    args = ap.parse_args(argv)

    res = run_bench(
        args.runs,
        batches=[int(b) for b in args.batch.split(",")],
        threads=args.threads,
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        reporter=_Log(),
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    s, m = res["settings"], res["machine"]
    lb, tb = s["latency_batch"], s["throughput_batch"]
    print(
        f"{m['cpu_model']}, {s['threads']} threads, {s['seconds']} s/row/batch in {s['rounds']} interleaved rounds; "
        f"load average {m['load_average']}"
    )
    groups = dict.fromkeys(r["group"] for r in res["rows"])
    for g in groups:
        rows = [r for r in res["rows"] if r["group"] == g]
        print(f"\n{rows[0]['model']} — {rows[0]['gflops'] or 0:.3f} GFLOPs/image")
        print(
            f"{'backend':<15}{'precision':<22}{'status':<12}{f'p50 b{lb} ms':>12}{'x PyTorch':>11}"
            f"{f'img/s b{tb}':>12}{'x PyTorch':>11}{'% peak':>8}"
        )
        for r in rows:
            if r["p50_ms"] is None:
                print(f"{r['backend']:<15}{r['precision']:<22}{r['status']}: {r['reason']}")
                continue
            sp = f"{r['speedup']:.2f}" if r["speedup"] else "—"
            spt = f"{r['speedup_throughput']:.2f}" if r["speedup_throughput"] else "—"
            fr = f"{100 * r['fraction_of_peak']:.1f}" if r["fraction_of_peak"] else "—"
            status = "pass" if r["status"] == "pass" else "REJECTED"
            print(
                f"{r['backend']:<15}{r['precision']:<22}{status:<12}{r['p50_ms']:>12.2f}{sp:>11}"
                f"{r['throughput_img_s']:>12.0f}{spt:>11}{fr:>8}"
            )
        print("ratios within a runtime (medians; >1 = the first is faster):")
        for backend in ("ONNX Runtime", "OpenVINO"):
            fp, q = _find(rows, backend, "fp32", g), _find(rows, backend, "int8", g)
            if fp and q:
                print(
                    f"  {backend} INT8 vs FP32: latency b{lb} {fp['p50_ms'] / q['p50_ms']:.2f}x, "
                    f"throughput b{tb} {q['throughput_img_s'] / fp['throughput_img_s']:.2f}x"
                )
        fp, bf = _find(rows, "OpenVINO", "fp32", g), _find(rows, "OpenVINO", "bf16", g)
        if fp and bf:
            print(
                f"  OpenVINO {bf['precision']} vs f32 hint: latency b{lb} {fp['p50_ms'] / bf['p50_ms']:.2f}x, "
                f"throughput b{tb} {bf['throughput_img_s'] / fp['throughput_img_s']:.2f}x"
            )
    best = res["compute_bound"].get("best_int8")
    meas = res["compute_bound"]["measured"]
    print(
        f"\npeaks measured: fp32 {meas['fp32']['gflops']:.0f}, bf16 {meas['bf16']['gflops']:.0f}, "
        f"int8 {meas['int8']['gflops']:.0f} GFLOP/s ({meas['int8']['method']})"
    )
    if best:
        print(
            f"best INT8 backend: {best['row']} {best['achieved_gflops']:.1f} GFLOP/s = "
            f"{100 * best['ratio_to_measured_peak']:.1f}% of the measured int8 compute bound "
            f"({best['throughput_img_s']:.0f} of {best['bound_img_s']:.0f} img/s)"
        )


if __name__ == "__main__":
    main()
