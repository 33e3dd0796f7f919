"""Which export levers pay on M5/224: every variant measured side by side in one run.

    python benchmarks/m5_levers.py [RUN] [--model m5] [--image-size 224] [--threads N]
                                   [--seconds 4] [--rounds 5] [--batch 1] [--profile]
                                   [--only ort-fp32,ort-int8,ov-f32,ov-int8]

Variants per backend (ONNX Runtime FP32 / INT8, OpenVINO f32 / INT8), each exported from the
same fused model (RUN's weights, or untrained ones: speed does not depend on them):

- ``timm``: the graph of timm's modules as they are (the export before issue 17);
- ``equiv``: the export-only attention and MXA modules (``mxa_edge.torch_side.export.export_modules``),
  batch axis still dynamic;
- ``equiv-b1``: the same with the batch fixed at 1 (ONNX: traced at batch 1; OpenVINO:
  ``fix_ir_batch``).

PyTorch eager FP32 runs in the same interleaved rounds as the reference. For each variant:
median latency, the ratio to the backend's ``timm`` variant and to PyTorch (paired round by
round), and max |logits - reference| on a fixed batch (FP32: vs torch; INT8: vs the same
backend's ``timm`` INT8, which is what the gate measured before). ``--profile`` prints the
per-op profile (ONNX Runtime profiler / OpenVINO counters) of each variant.
INT8 calibration: --calib uniform random images in the model's range (sets ranges, not speed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mxa_edge.bench.profile import format_profile, profile_openvino, profile_ort
from mxa_edge.bench.timing import measure_interleaved, paired_ratio
from mxa_edge.runtime.engines import open_model_file
from mxa_edge.support.machine import isa_line, physical_cores
from mxa_edge.torch_side.export.onnx_graph import export_onnx, quantize_onnx
from mxa_edge.torch_side.export.prepare import AuxOutputs, fuse_model

BACKENDS = ("ort-fp32", "ort-int8", "ov-f32", "ov-int8")
VARIANTS = ("timm", "equiv", "equiv-b1")


def load_model(run: Path | None, variant: str, size: int, seed: int):
    if run is not None:
        from mxa_edge.formats import RunRecord
        from mxa_edge.torch_side.models.weights import load_run

        model, _ = load_run(RunRecord.load(run))
        return model.eval()
    from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
    from mxa_edge.torch_side.models.student import build_student

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_student(ModelSpec(variant, size, mxa=MXAConfig())).eval()


def export_variant(fused, example, calib, backend: str, variant: str, folder: Path) -> tuple[Path, str]:
    """Write one variant; returns (model file, runtime)."""
    equivalent = variant != "timm"
    static = 1 if variant.endswith("-b1") else None
    onnx_path = folder / "model.onnx"
    # ONNX Runtime takes the batch-1 trace; OpenVINO fixes the batch on the IR (fix_ir_batch).
    export_onnx(fused, example, onnx_path, equivalent=equivalent, static_batch=static if "ort" in backend else None)
    if backend == "ort-fp32":
        return onnx_path, "onnxruntime"
    if backend == "ort-int8":
        out = folder / "model.int8.onnx"
        quantize_onnx(onnx_path, out, calib, "minmax")
        return out, "onnxruntime"
    from mxa_edge.support.telemetry import disable_telemetry
    from mxa_edge.torch_side.export.openvino_backend import fix_ir_batch, quantize_ir

    disable_telemetry()
    import openvino as ov

    ov_model = ov.Core().read_model(str(onnx_path))
    if backend == "ov-int8":
        ov_model, _ = quantize_ir(ov_model, calib, "minmax")
    xml = folder / "model.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    if static:
        fix_ir_batch(xml, static)
    return xml, "openvino"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", type=Path, default=None)
    ap.add_argument("--model", default="m5")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per variant")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--only", default=",".join(BACKENDS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="write the variants here instead of a temporary folder")
    args = ap.parse_args(argv)
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    chosen = [b for b in args.only.split(",") if b]
    variants = [v for v in args.variants.split(",") if v]

    model = load_model(args.run, args.model, args.image_size, args.seed)
    s = model.spec.image_size
    rng = np.random.default_rng(args.seed)
    calib = rng.uniform(-1024, 1024, (args.calib, 1, s, s)).astype(np.float32)
    check = rng.uniform(-1024, 1024, (2, 1, s, s)).astype(np.float32)
    x1 = check[:1]
    example = torch.from_numpy(check)
    fused = fuse_model(model, example)
    wrapped = AuxOutputs(fused).eval()
    with torch.inference_mode():
        ref = wrapped(torch.from_numpy(x1))[0].numpy()

    def torch_run():
        with torch.inference_mode():
            return wrapped(torch.from_numpy(x1))

    fns = {"pytorch": torch_run}
    files, logits = {}, {}
    with tempfile.TemporaryDirectory(prefix="mxa-levers-") as tmp:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        for backend in chosen:
            for variant in variants:
                folder = Path(tmp) / f"{backend}-{variant}"
                folder.mkdir(exist_ok=True)
                print(f"· exporting {backend} {variant}", file=sys.stderr)
                path, runtime = export_variant(fused, example, calib, backend, variant, folder)
                precision = "f32" if runtime == "openvino" else None
                engine = open_model_file(path, runtime, threads, precision=precision)
                key = f"{backend}|{variant}"
                files[key] = (path, runtime)
                logits[key] = engine.run(x1)["logits"]
                fns[key] = lambda e=engine: e.run(x1)
        res = measure_interleaved(fns, 1, args.seconds, args.warmup, args.rounds)
        profiles = {}
        if args.profile:
            for key, (path, runtime) in files.items():
                if runtime == "onnxruntime":
                    profiles[key] = profile_ort(path, x1, threads)
                else:
                    profiles[key] = profile_openvino(path, x1, threads)

    import os

    print(
        f"\n{args.model}/{s}, batch 1, {threads} threads, {args.seconds} s per variant in {args.rounds} interleaved "
        f"rounds; {isa_line()}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    torch_ms = res["pytorch"].median("p50_ms")
    print(f"PyTorch eager FP32: {torch_ms:.2f} ms")
    print(f"{'backend':<10}{'variant':<10}{'p50 ms':>9}{'x timm':>9}{'x PyTorch':>11}{'max|dlogit|':>13}  vs")
    for backend in chosen:
        base = f"{backend}|timm"
        for variant in variants:
            key = f"{backend}|{variant}"
            m = res[key]
            if m.error:
                print(f"{backend:<10}{variant:<10} failed: {m.error}")
                continue
            vs_base = paired_ratio(res[base], m, "p50_ms") if base in res and key != base else None
            vs_torch = paired_ratio(res["pytorch"], m, "p50_ms")
            if "int8" in backend and base in logits:
                diff, against = float(np.abs(logits[key] - logits[base]).max()), "timm INT8"
            else:
                diff, against = float(np.abs(logits[key] - ref).max()), "torch"
            print(
                f"{backend:<10}{variant:<10}{m.median('p50_ms'):>9.2f}"
                f"{(f'{vs_base:.2f}x' if vs_base else '—'):>9}{vs_torch:>10.2f}x{diff:>13.2e}  {against}"
            )
    for key, prof in profiles.items():
        print(format_profile(key, prof))


if __name__ == "__main__":
    main()
