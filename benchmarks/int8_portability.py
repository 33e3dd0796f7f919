"""INT8 schemes on both x86 kernel paths: drift per finding and speed, side by side.

    python benchmarks/int8_portability.py RUN [--targets onnx,openvino] [--schemes portable,vnni]
                                              [--threads 2] [--seconds 2] [--markdown]

For each target and ``--int8-scheme`` it exports the run (``export_run``: the real pipeline,
calibration, sensitivity and gate; a refused export is measured too, from its ``.rejected``
folder), then runs the WHOLE held-out split through the exported model twice: natively on this
CPU and on the AVX2 kernel path through ``qemu-x86_64 -cpu Haswell`` (AVX2 + FMA CPUID, no
AVX-512, no VNNI: ONNX Runtime's MLAS and oneDNN dispatch as on a real AVX2 workstation). Each
pass is judged by the drift gate against the FP32 model (the run's decision rule; the default
gate bounds) and printed per finding (AUC change, sensitivity/specificity change at the
threshold), with the max |logit| difference between the two paths.

Speed: batch-1 p50 latency of each INT8 artifact and of the FP32 ONNX Runtime artifact on THIS
CPU, interleaved (the ISA is printed beside it). Under qemu, time is emulation time and is not
reported: measure AVX2 speed on a real AVX2 machine with ``mxa-edge bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _export(run: Path, target: str, scheme: str, out: Path, qat: bool = False) -> Path:
    from mxa_edge.formats import naming
    from mxa_edge.support.errors import DriftGateError
    from mxa_edge.torch_side.export import export_run

    if naming.is_artifact(out):
        return out
    rejected = naming.rejected_dir(out)
    if naming.is_artifact(rejected):
        return rejected
    t = time.perf_counter()
    try:
        export_run(run, target, out, int8=not qat, qat=qat, int8_scheme=scheme, progress=lambda m: None)
        where = out
    except DriftGateError:
        where = rejected
    print(f"  exported {target} {scheme}{' qat' if qat else ''} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return where


def _gate(ref, probs_new, decision, guard=None, features_new=None):
    """The export's own gate (default bounds), the input guard's flag-rate rise included."""
    from mxa_edge.decision import drift
    from mxa_edge.decision.guard import guard_drift

    v = ref.valid
    flags = None
    if guard is not None and features_new is not None:
        flags = guard_drift(
            guard.score(ref.features, ref.x), guard.score(features_new, ref.x), guard.threshold, n_boot=200, seed=0
        )
    return drift.gate(
        v.targets,
        v.mask,
        ref.probs,
        probs_new,
        thresholds=decision.threshold_array(),
        n_boot=200,
        seed=0,
        split="valid",
        guard=flags,
    )


METRICS = ("delta", "sensitivity_delta", "specificity_delta")


def _latency(engines: dict, x1: np.ndarray, seconds: float) -> dict:
    for e in engines.values():
        for _ in range(3):
            e.run(x1)
    times = {k: [] for k in engines}
    end = time.perf_counter() + seconds * len(engines)
    while time.perf_counter() < end:
        for k, e in engines.items():  # interleaved: load drift hits every row alike
            t = time.perf_counter()
            e.run(x1)
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--targets", default="onnx,openvino")
    ap.add_argument("--schemes", default="portable,vnni")
    ap.add_argument("--qat", action="store_true", help="also QAT exports (fine-tuning: minutes each)")
    ap.add_argument("--out", type=Path, default=None, help="where the exports go (default RUN/exports/portability)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from mxa_edge.decision.guard import FEATURES_OUTPUT, load_guard
    from mxa_edge.decision.scoring import engine_runner, score
    from mxa_edge.formats import load_artifact
    from mxa_edge.runtime import kernel_paths
    from mxa_edge.runtime.engines import open_engine
    from mxa_edge.support.machine import int8_kernel_class, isa_line
    from mxa_edge.torch_side.export.pipeline import _load, _reference

    run = args.run.absolute()
    out_root = (args.out or run / "exports" / "portability").absolute()
    loaded = _load(run, 0)
    ref = _reference(loaded, lambda m: None)
    decision = loaded.run.decision
    here = int8_kernel_class()
    print(
        f"this CPU: {isa_line()} (INT8 kernels: {here}); AVX2 path: {kernel_paths.avx2_description()}", file=sys.stderr
    )

    rows, engines = [], {}
    fp32 = out_root / "onnx-fp32"
    if not (fp32 / "manifest.json").is_file():
        from mxa_edge.torch_side.export import export_run

        export_run(run, "onnx", fp32, progress=lambda m: None)
    engines["ORT FP32"] = open_engine(load_artifact(fp32), args.threads)
    variants = [(t, s, False) for t in args.targets.split(",") for s in args.schemes.split(",")]
    if args.qat:
        variants += [(t, s, True) for t in args.targets.split(",") for s in args.schemes.split(",")]
    for target, scheme, qat in variants:
        name = f"{target}-{'qat-' if qat else ''}int8-{scheme}"
        art_dir = _export(run, target, scheme, out_root / name, qat)
        art = load_artifact(art_dir)
        engine = open_engine(art, args.threads)
        guard = load_guard(art)
        scored = score(engine_runner(engine), ref.x, outputs=("logits", FEATURES_OUTPUT))
        native = np.asarray(scored["logits"])
        t = time.perf_counter()
        got, why = kernel_paths.run_on_avx2(
            art.entry, art.runtime, art.precision.inference_precision, ref.x, ("logits", FEATURES_OUTPUT)
        )
        if got is None:
            sys.exit(f"AVX2 harness unavailable: {why}")
        avx2 = np.asarray(got[0]["logits"])
        print(
            f"  {name}: AVX2 pass over {len(ref.x)} images in {time.perf_counter() - t:.0f} s (emulated)",
            file=sys.stderr,
        )
        verdicts = {}
        for cls, logits, feats in ((here, native, scored[FEATURES_OUTPUT]), (got[1], avx2, got[0][FEATURES_OUTPUT])):
            rep = _gate(ref, decision.probabilities(logits), decision, guard, feats)
            g = rep.table.get("guard") or {}
            verdicts[cls] = {
                "passed": rep.passed,
                "macro_delta": rep.table["macro_delta"],
                "reasons": rep.reasons,
                "guard_flag_rate_ref": g.get("flag_rate_ref"),
                "guard_flag_rate_new": g.get("flag_rate_new"),
                "per_label": {
                    k: {m: v.get(m) for m in ("delta", "sensitivity_delta", "specificity_delta")}
                    for k, v in rep.table["per_label"].items()
                },
            }
        engines[name] = engine
        rows.append(
            {
                "variant": name,
                "artifact": str(art_dir),
                "max_abs_int8_weight": getattr(art.manifest.quantization, "max_abs_int8_weight", None),
                "max_abs_logit_between_paths": float(np.abs(native - avx2).max()),
                "classes": verdicts,
            }
        )
    speed = _latency(engines, ref.x[:1], args.seconds)
    for r in rows:
        r["batch1_ms_here"] = speed[r["variant"]]
        r["vs_ort_fp32_here"] = speed["ORT FP32"] / speed[r["variant"]]
    result = {"isa": isa_line(), "int8_kernels": here, "ort_fp32_batch1_ms": speed["ORT FP32"], "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    _print(result, here, markdown=args.markdown)


def _print(result: dict, here: str, markdown: bool) -> None:
    isa = result["isa"]
    head = (
        f"| variant | max int8 weight | max Δlogit {here} vs avx2 | gate on {here} (macro Δ) | gate on avx2 (macro Δ) "
        f"| batch-1 ms, {isa} | x ORT FP32 |"
    )
    print(head)
    print("|" + "---|" * 7)
    for r in result["rows"]:
        cells = []
        for cls in (here, "avx2"):
            v = r["classes"].get(cls) or next(iter(r["classes"].values()))
            verdict = "published" if v["passed"] else "refused: " + "; ".join(v["reasons"][:2])
            guard = (
                f", guard {v['guard_flag_rate_ref']:.3f}->{v['guard_flag_rate_new']:.3f}"
                if v.get("guard_flag_rate_new") is not None
                else ""
            )
            cells.append(f"{verdict} ({v['macro_delta']:+.4f}{guard})")
        print(
            f"| {r['variant']} | {r['max_abs_int8_weight']} | {r['max_abs_logit_between_paths']:.4f} | {cells[0]} | "
            f"{cells[1]} | {r['batch1_ms_here']:.2f} | {r['vs_ort_fp32_here']:.2f}x |"
        )
    print(f"\nORT FP32 batch-1 p50: {result['ort_fp32_batch1_ms']:.2f} ms ({isa})")
    if not markdown:
        for r in result["rows"]:
            print(f"\n{r['variant']}: per finding, AUC / sensitivity / specificity change vs FP32")
            for cls, v in r["classes"].items():
                judged = {k: d for k, d in v["per_label"].items() if d.get("delta") is not None}
                worst = sorted(judged.items(), key=lambda kv: min(x for x in kv[1].values() if x is not None))[:4]
                shown = ", ".join(
                    f"{k} " + "/".join("n/a" if d.get(m) is None else f"{d[m]:+.3f}" for m in METRICS) for k, d in worst
                )
                print(f"  {cls}: worst {shown}")


if __name__ == "__main__":
    main()
