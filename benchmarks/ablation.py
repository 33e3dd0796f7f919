"""Ablation at equal budget: baseline vs +MXA vs +MXA+KD (the paper's Table 2, on phantoms).

Trains three students with identical data, seed, epochs and schedule on the embedded phantom
dataset (or --data), then prints, side by side:
  * macro AUC with its 95% bootstrap CI for each variant, and the paired bootstrap CI of the
    difference against the baseline (same validation images, same resamples);
  * per-pathology AUC for the three variants;
  * MXA's cost over the baseline: params, GFLOPs (torch FlopCounterMode) and batch-1 latency
    ratio (PyTorch eager, interleaved medians), at the trained configuration and at M5/224,
    for MXA once per stage and beside every attention block.

Run:  .venv/bin/python benchmarks/ablation.py [--epochs 12] [--model m0] [--image-size 128] [--out runs/ablation]
The teacher is fine-tuned once and cached, so the KD variant reuses it. Expect ~10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mxa_edge.formats import RunRecord, is_run
from mxa_edge.labels import LABEL_ABBREVIATIONS
from mxa_edge.metrics import paired_auc_delta, sigmoid
from mxa_edge.models.configs import ModelSpec, MXAConfig
from mxa_edge.models.student import build_student
from mxa_edge.models.weights import load_run
from mxa_edge.training.config import TrainConfig
from mxa_edge.training.loop import predict_logits
from mxa_edge.training.pipeline import train

VARIANTS = {
    "baseline": dict(mxa=False, kd=False),
    "+MXA": dict(mxa=True, kd=False),
    "+MXA+KD": dict(mxa=True, kd=True),
}


def latency_ratios(variant: str, size: int, rounds: int = 7, iters: int = 20) -> dict:
    """Batch-1 eager latency of MXA placements relative to no MXA, interleaved rounds."""
    torch.manual_seed(0)
    models = {
        "none": build_student(ModelSpec(variant, size, mxa=None)).eval(),
        "stage": build_student(ModelSpec(variant, size, mxa=MXAConfig(placement="stage"))).eval(),
        "block": build_student(ModelSpec(variant, size, mxa=MXAConfig(placement="block"))).eval(),
    }
    from mxa_edge.export.prepare import count_flops

    x = torch.randn(1, 1, size, size) * 500
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            for _ in range(5):
                m(x)
        for _ in range(rounds):
            for k, m in models.items():
                t = time.perf_counter()
                for _ in range(iters):
                    m(x)
                times[k].append((time.perf_counter() - t) / iters)
    base = statistics.median(times["none"])
    out = {}
    for k, m in models.items():
        cost = count_flops(m, size)
        out[k] = {
            "params": cost["params"],
            "gflops": cost["flops"] / 1e9,
            "latency_ms": statistics.median(times[k]) * 1e3,
            "latency_ratio": statistics.median(times[k]) / base,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--model", default="m0")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--skip-train", action="store_true", help="reuse runs already in --out")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency part (e.g. while the machine is busy)")
    args = ap.parse_args()

    runs = {}
    for name, kw in VARIANTS.items():
        out = Path(args.out) / name.strip("+").replace("+", "-").lower()
        if not (args.skip_train and is_run(out)):
            if out.exists():
                import shutil

                shutil.rmtree(out)
            t = time.perf_counter()
            cfg = TrainConfig(
                data=args.data,
                out=str(out),
                model=args.model,
                image_size=args.image_size,
                epochs=args.epochs,
                seed=args.seed,
                n_boot=args.n_boot,
                **kw,
            )
            train(cfg)
            print(f"trained {name} in {time.perf_counter() - t:.0f} s -> {out}", flush=True)
        runs[name] = out

    # Score every variant on the same validation images.
    _, baseline = load_run(runs["baseline"])
    pp = baseline.preprocess
    valid = baseline.data.load("valid", pp)  # the runs' own selection of the held-out split
    probs = {}
    for name, out in runs.items():
        model, _ = load_run(out)
        probs[name] = sigmoid(predict_logits(model, valid.images, pp.value_range))
    metrics = {name: RunRecord.load(out).metrics() for name, out in runs.items()}

    print(
        f"\nAblation on {baseline.data.root} ({len(valid)} validation images), {args.model} @ {args.image_size}px, "
        f"{args.epochs} epochs, seed {args.seed}"
    )
    print(f"{'variant':<10} {'macro AUC':>9} {'95% CI':>15} {'Δ vs baseline':>14} {'95% CI of Δ (paired)':>22}")
    summary = {}
    for name in runs:
        m = metrics[name]
        ci = m["macro_auc_ci"] or [float("nan")] * 2
        if name == "baseline":
            delta, dci = 0.0, [0.0, 0.0]
        else:
            pd = paired_auc_delta(
                valid.targets, probs["baseline"], probs[name], valid.mask, n_boot=args.n_boot, seed=args.seed
            )
            delta, dci = pd["macro_delta"], pd["macro_delta_ci"]
        summary[name] = {
            "macro_auc": m["macro_auc"],
            "ci": ci,
            "delta": delta,
            "delta_ci": dci,
            "micro_auc": m["micro_auc"],
        }
        print(
            f"{name:<10} {m['macro_auc']:>9.4f} {ci[0]:>7.4f}–{ci[1]:<7.4f} {delta:>+14.4f} "
            f"{dci[0]:>+10.4f}…{dci[1]:<+10.4f}"
        )
    print("\nper-pathology AUC")
    print(f"{'':<6}" + "".join(f"{n:>10}" for n in runs))
    for label in metrics["baseline"]["per_label"]:
        vals = [metrics[n]["per_label"][label]["auc"] for n in runs]
        print(
            f"{LABEL_ABBREVIATIONS[label]:<6}"
            + "".join(f"{v:>10.3f}" if v is not None else f"{'n/a':>10}" for v in vals)
        )

    cost = {}
    if not args.no_latency:
        print("\nMXA cost over the baseline (PyTorch eager, batch 1, interleaved medians)")
    for variant, size in () if args.no_latency else ((args.model, args.image_size), ("m5", 224)):
        r = latency_ratios(variant, size)
        cost[f"{variant}@{size}"] = r
        for k in ("stage", "block"):
            print(
                f"{variant}@{size} MXA per {k:<5}: params {r[k]['params'] / r['none']['params']:.3f}x, "
                f"GFLOPs {r['none']['gflops']:.3f} -> {r[k]['gflops']:.3f} "
                f"({r[k]['gflops'] / r['none']['gflops']:.3f}x), "
                f"latency {r['none']['latency_ms']:.2f} -> {r[k]['latency_ms']:.2f} ms ({r[k]['latency_ratio']:.3f}x)"
            )
    (Path(args.out) / "ablation.json").write_text(json.dumps({"auc": summary, "cost": cost}, indent=2))
    print(f"\nwritten {Path(args.out) / 'ablation.json'}")


if __name__ == "__main__":
    main()
