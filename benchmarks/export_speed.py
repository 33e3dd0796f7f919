"""Latency of exported artifacts side by side: ORT FP32/INT8, OpenVINO f32/default/INT8.

    PYTHONPATH=. python benchmarks/export_speed.py RUN_DIR [ARTIFACT ...] [--iters 200] [--threads N]

Given a run folder, the five standard artifacts are looked up under RUN/exports/
(onnx-fp32, onnx-int8, openvino-fp32, openvino-int8; created with export_run when missing,
with the default drift bounds relaxed to report-only). "OpenVINO default" is the FP32 IR
compiled WITHOUT an inference-precision hint: bf16 on bf16-capable CPUs. Medians of batch-1
and batch-8 latency; each round runs every engine once in turn (interleaved) after a
warm-up, so load drift on a shared machine hits all engines alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mxa_edge.formats import is_artifact, is_run, load_artifact
from mxa_edge.runtime.engines import open_engine

STANDARD = {
    "onnx-fp32": ("onnx", False),
    "onnx-int8": ("onnx", True),
    "openvino-fp32": ("openvino", False),
    "openvino-int8": ("openvino", True),
}


def engines_for(paths, threads):
    out = {}
    for p in paths:
        p = Path(p)
        if is_run(p):  # a run: its standard exports
            for name, (target, int8) in STANDARD.items():
                art_dir = p / "exports" / name
                if not is_artifact(art_dir):
                    from mxa_edge.torch_side.export import export_run

                    print(f"exporting {name} ...", file=sys.stderr)
                    export_run(p, target, art_dir, int8=int8, max_macro_drop=1.0, max_drop=1.0)
                art = load_artifact(art_dir)
                label = {
                    "onnx-fp32": "ORT FP32",
                    "onnx-int8": "ORT INT8",
                    "openvino-fp32": "OV f32",
                    "openvino-int8": "OV INT8",
                }[name]
                out[label] = open_engine(art, threads)
                if name == "openvino-fp32":
                    out["OV default"] = open_engine(art, threads, precision=None)
        else:
            art = load_artifact(p)
            out[f"{p.name}"] = open_engine(art, threads)
    return out, art.preprocess.image_size


def bench(engines, size, batch, iters, rounds=5, warmup=20):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1024, 1024, (batch, 1, size, size)).astype(np.float32)
    for e in engines.values():
        for _ in range(warmup):
            e.run(x)
    times = {k: [] for k in engines}
    per_round = max(1, iters // rounds)
    for _ in range(rounds):
        for k, e in engines.items():
            for _ in range(per_round):
                t = time.perf_counter()
                e.run(x)
                times[k].append(time.perf_counter() - t)
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    engines, size = engines_for(args.paths, args.threads)
    res = {b: bench(engines, size, b, args.iters if b == 1 else max(20, args.iters // 4)) for b in (1, 8)}
    base = "OV f32" if "OV f32" in engines else next(iter(engines))
    print(f"median latency (ms), {size}px, threads={args.threads or 'all'}; ratio = {base} / engine")
    print(f"{'engine':<14}{'batch 1':>10}{'x':>7}{'batch 8':>10}{'x':>7}")
    for k in engines:
        r1, r8 = res[1][k], res[8][k]
        print(f"{k:<14}{r1:>10.3f}{res[1][base] / r1:>7.2f}{r8:>10.3f}{res[8][base] / r8:>7.2f}")
    if "ORT INT8" in engines:
        print(f"ORT INT8 vs ORT FP32 at batch 1: {res[1]['ORT FP32'] / res[1]['ORT INT8']:.2f}x")


if __name__ == "__main__":
    main()
