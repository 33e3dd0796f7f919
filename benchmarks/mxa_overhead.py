"""What MXA costs: params, GFLOPs and batch-1 latency of MXA ("stage", "block") vs no MXA.

    python benchmarks/mxa_overhead.py [--model m5] [--image-size 224] [--threads N] [--seconds 4]
                                      [--backends pytorch,ort-fp32,ort-int8,ov-f32,ov-int8,ov-f32-b1,ov-int8-b1]
                                      [--placements stage,block] [--profile]

The issue's target: at most +10% latency from MXA, FP32 and INT8. Three students of the same
variant and resolution are built with untrained weights (latency does not depend on them):
no MXA, MXA at the last block of each stage ("stage", the default) and MXA beside every
attention ("block"). Each is Conv+BN fused and exported with the project's own backends
(ONNX Runtime FP32 and INT8, OpenVINO FP32 and INT8; INT8 calibrated on --calib uniform
random images in the model's range, which sets ranges but not speed; no drift gate: there
is nothing trained to check). Params and FLOPs come from ``count_flops`` (conv/linear/matmul,
2 FLOPs per MAC). Latency: every (placement, backend) pair runs in the same interleaved
rounds on the same pinned threads; the MXA/no-MXA ratio is taken round by round (median of
paired ratios), so machine-load drift cancels. ``--profile``: where the time goes in each
exported model with MXA at its default placement (per-op profile, MXA scope's share).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mxa_edge import backends
from mxa_edge.bench.timing import measure_interleaved, paired_ratio
from mxa_edge.formats import Precision
from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
from mxa_edge.runtime.engines import open_model_file
from mxa_edge.support.machine import isa_line, physical_cores
from mxa_edge.torch_side.export.prepare import AuxOutputs, count_flops, fuse_model
from mxa_edge.torch_side.models.student import build_student

PLACEMENTS = {"none": None, "stage": "stage", "block": "block"}
# name -> (target, int8, fixed batch): the -b1 rows are the IR with its batch fixed at 1
# (`export --static-batch 1`), OpenVINO's batch-1 artifact.
BACKENDS = {
    "pytorch": None,
    "ort-fp32": ("onnx", False, None),
    "ort-int8": ("onnx", True, None),
    "ov-f32": ("openvino", False, None),
    "ov-int8": ("openvino", True, None),
    "ov-f32-b1": ("openvino", False, 1),
    "ov-int8-b1": ("openvino", True, 1),
}
DEFAULT_BACKENDS = "pytorch,ort-fp32,ort-int8,ov-f32,ov-int8"


def build(variant: str, size: int, placement: str | None, seed: int):
    spec = ModelSpec(variant, size, mxa=MXAConfig(placement=placement) if placement else None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_student(spec).eval()
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="m5")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per (placement, backend)")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calib", type=int, default=16, help="calibration images for the INT8 exports")
    ap.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"any of {', '.join(BACKENDS)}")
    ap.add_argument("--placements", default=",".join(PLACEMENTS), help="none is always measured (the baseline)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="per-op profile of each backend's default-placement model")
    args = ap.parse_args(argv)
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    chosen = [b for b in args.backends.split(",") if b]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    placements = {p: PLACEMENTS[p] for p in PLACEMENTS if p == "none" or p in args.placements.split(",")}
    s = args.image_size
    rng = np.random.default_rng(args.seed)
    calib = rng.uniform(-1024, 1024, (args.calib, 1, s, s)).astype(np.float32)
    x = rng.uniform(-1024, 1024, (1, 1, s, s)).astype(np.float32)
    xt = torch.from_numpy(x)

    cost, fns, files = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="mxa-overhead-") as tmp:
        for pname, placement in placements.items():
            model = build(args.model, s, placement, args.seed)
            cost[pname] = count_flops(model, s)
            example = torch.from_numpy(rng.uniform(-1024, 1024, (2, 1, s, s)).astype(np.float32))
            fused = fuse_model(model, example)
            for bname in chosen:
                if BACKENDS[bname] is None:
                    wrapped = AuxOutputs(fused).eval()

                    def run(m=wrapped):
                        with torch.inference_mode():
                            return m(xt)

                    fns[(pname, bname)] = run
                    continue
                target, int8, fixed_batch = BACKENDS[bname]
                print(f"· exporting {pname} -> {bname}", file=sys.stderr)
                out_dir = Path(tmp) / f"{pname}-{bname}"
                out_dir.mkdir()
                spec = backends.get(target)
                opts = backends.ExportOptions(
                    precision=Precision.INT8 if int8 else Precision.FP32,
                    calibration=calib if int8 else None,
                    seed=args.seed,
                )
                exporter = spec.make_exporter()
                out = exporter.export(fused, example, out_dir, opts)
                if fixed_batch:
                    exporter.fix_batch(out_dir / out.files[0], fixed_batch)
                eng = open_model_file(
                    out_dir / out.files[0], spec.runtime, threads, precision=out.precision.inference_precision
                )
                fns[(pname, bname)] = lambda e=eng: e.run(x)
                files[(pname, bname)] = (out_dir / out.files[0], spec.runtime, out.precision.inference_precision)

        res = measure_interleaved(
            {f"{p}|{b}": f for (p, b), f in fns.items()}, 1, args.seconds, args.warmup, args.rounds
        )
        profiles = {}
        if args.profile:
            from mxa_edge.bench.profile import profile_openvino, profile_ort

            for (pname, bname), (path, runtime, precision) in files.items():
                if pname in ("none", "stage"):
                    if runtime == "onnxruntime":
                        profiles[(pname, bname)] = profile_ort(path, x, threads)
                    else:
                        profiles[(pname, bname)] = profile_openvino(path, x, threads, precision)

    base = cost["none"]
    print(
        f"\n{args.model} at {s} px, {threads} threads, batch 1, {args.seconds} s per cell in {args.rounds} interleaved "
        "rounds; ratios = median of paired per-round ratios vs no MXA"
    )
    print(f"{'placement':<10}{'params (M)':>11}{'x':>7}{'GFLOPs':>9}{'x':>7}")
    for p, c in cost.items():
        print(
            f"{p:<10}{c['params'] / 1e6:>11.3f}{c['params'] / base['params']:>7.3f}{c['flops'] / 1e9:>9.3f}"
            f"{c['flops'] / base['flops']:>7.3f}"
        )
    print(
        f"\n{'backend':<10}"
        + "".join(f"{p + ' ms':>12}" for p in placements)
        + "".join(f"{p + '/none':>12}" for p in placements if p != "none")
    )
    for b in chosen:
        ms = [res[f"{p}|{b}"].median("p50_ms") for p in placements]
        ratios = [paired_ratio(res[f"{p}|{b}"], res[f"none|{b}"], "p50_ms") for p in placements if p != "none"]
        flag = "  <- over +10%" if any(r and r > 1.10 for r in ratios) else ""
        print(
            f"{b:<10}"
            + "".join(f"{m:>12.2f}" if m else f"{'failed':>12}" for m in ms)
            + "".join(f"{r:>12.3f}" if r else f"{'—':>12}" for r in ratios)
            + flag
        )
    for key, m in res.items():
        if m.error:
            print(f"{key}: {m.error}")
    if profiles:
        from mxa_edge.bench.profile import format_profile

        print("\nper-op profiles (kernel time per call; MXA scope = ops inside the MXA blocks):")
        for (pname, bname), prof in profiles.items():
            print(format_profile(f"{bname} {pname}", prof))
    import os

    print(f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}; {isa_line()}")


if __name__ == "__main__":
    main()
