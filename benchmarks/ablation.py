"""Ablation at equal student budget: baseline / +MXA / +KD / +MXA+KD (the paper's Table 2, on phantoms).

Trains four students with identical data, seed, epochs and schedule on the embedded phantom
dataset (or --data), then prints, side by side:
  * macro AUC with its 95% bootstrap CI for each variant, and the paired bootstrap CI of the
    difference against the baseline (same validation images, same resamples); the same for the
    mean AUC over the 5 rarest findings (fewest training positives);
  * the teacher's held-out macro AUC next to the KD students': KD can only help when the teacher
    knows more than the student;
  * per-pathology AUC for the four variants;
  * MXA's cost over the baseline: params, GFLOPs (torch FlopCounterMode) and batch-1 latency
    ratio (PyTorch eager, interleaved medians), at the trained configuration and at M5/224,
    for MXA once per stage and beside every attention block.
--markdown prints the README table.

The teacher (DenseNet-121, --teacher finetune) is first pretrained on --teacher-pretrain-images
phantoms of a separate set (20000 by default; none of them is a training, tuning or held-out
image), then fine-tuned on the training split. Both stages are cached, so the two KD variants
(and later runs) share one teacher. Budget on 2 CPU cores at the default 112 px: the pretraining
runs once, 20000 images x 1 epoch, plus a few minutes generating the set (minutes on a GPU);
the four students are ~25 min. Defaults: the default recipe (``TrainConfig``).

Run:  .venv/bin/python benchmarks/ablation.py [--epochs 16] [--model m0] [--image-size 112]
          [--teacher-pretrain-images 20000] [--out runs/ablation] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mxa_edge.decision.metrics import paired_auc_delta, sigmoid
from mxa_edge.formats import RunRecord, is_run
from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
from mxa_edge.labels import LABEL_ABBREVIATIONS
from mxa_edge.torch_side.models.student import build_student
from mxa_edge.torch_side.models.weights import load_run
from mxa_edge.torch_side.training.config import TrainConfig
from mxa_edge.torch_side.training.loop import predict_logits
from mxa_edge.torch_side.training.pipeline import train

VARIANTS = {
    "baseline": dict(mxa=False, kd=False),
    "+MXA": dict(mxa=True, kd=False),
    "+KD": dict(mxa=False, kd=True),
    "+MXA+KD": dict(mxa=True, kd=True),
}
N_RARE = 5
# What must match for --skip-train to reuse a run already in --out.
REUSE_KEYS = (
    "model",
    "image_size",
    "epochs",
    "seed",
    "mxa",
    "kd",
    "teacher_pretrain_images",
    "teacher_pretrain_epochs",
)


def latency_ratios(variant: str, size: int, rounds: int = 7, iters: int = 20) -> dict:
    """Batch-1 eager latency of MXA placements relative to no MXA, interleaved rounds."""
    torch.manual_seed(0)
    models = {
        "none": build_student(ModelSpec(variant, size, mxa=None)).eval(),
        "stage": build_student(ModelSpec(variant, size, mxa=MXAConfig(placement="stage"))).eval(),
        "block": build_student(ModelSpec(variant, size, mxa=MXAConfig(placement="block"))).eval(),
    }
    from mxa_edge.torch_side.export.prepare import count_flops

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


def rarest_findings(selection, valid, n: int) -> list[int]:
    """Label columns of the ``n`` findings with the fewest training positives (as the runs' label
    policy reads them), among those the held-out split can score (both classes present)."""
    import numpy as np

    targets, mask = selection.targets(selection.read("train"))
    train_pos = ((targets == 1) & (mask > 0)).sum(axis=0)
    valid_pos = ((valid.targets == 1) & (valid.mask > 0)).sum(axis=0)
    valid_neg = ((valid.targets == 0) & (valid.mask > 0)).sum(axis=0)
    scorable = np.flatnonzero((valid_pos > 0) & (valid_neg > 0))
    return [int(c) for c in scorable[np.argsort(train_pos[scorable], kind="stable")][:n]]


def train_variants(args) -> dict[str, Path]:
    runs = {}
    for name, kw in VARIANTS.items():
        out = Path(args.out) / name.strip("+").replace("+", "-").lower()
        # The pretraining only concerns the teacher: the KD variants get it, the others have none.
        teacher = (
            dict(
                teacher_pretrain_images=args.teacher_pretrain_images,
                teacher_pretrain_epochs=args.teacher_pretrain_epochs,
            )
            if kw["kd"]
            else {}
        )
        cfg = TrainConfig(
            data=args.data,
            out=str(out),
            model=args.model,
            image_size=args.image_size,
            epochs=args.epochs,
            seed=args.seed,
            n_boot=args.n_boot,
            **kw,
            **teacher,
        )
        if args.skip_train and is_run(out):
            done, wanted, default = RunRecord.load(out).train_config, cfg.to_dict(), TrainConfig().to_dict()
            stale = [k for k in REUSE_KEYS if done.get(k, default[k]) != wanted[k]]
            if not stale:
                runs[name] = out
                continue
            print(f"{out}: trained with other {', '.join(stale)}; training it again", flush=True)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        t = time.perf_counter()
        train(cfg)
        print(f"trained {name} in {time.perf_counter() - t:.0f} s -> {out}", flush=True)
        runs[name] = out
    return runs


def _ci(ci) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "n/a"


def _delta(d: float, ci) -> str:
    return f"{d:+.3f} ({ci[0]:+.3f}, {ci[1]:+.3f})" if ci else f"{d:+.3f}"


def markdown_table(summary: dict, rare_names: list[str], teacher_note: str) -> str:
    rare = ", ".join(LABEL_ABBREVIATIONS[n] for n in rare_names)
    lines = [
        f"| variant | macro AUC (95% CI) | Δ vs baseline (paired 95% CI) | {len(rare_names)} rarest findings: "
        "mean AUC | Δ (paired 95% CI) | teacher macro AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        base = name == "baseline"
        teacher = r["teacher_macro_auc"]
        lines.append(
            f"| {name} | {r['macro_auc']:.3f} ({_ci(r['ci'])}) | {'—' if base else _delta(r['delta'], r['delta_ci'])} "
            f"| {r['rare_mean_auc']:.3f} | {'—' if base else _delta(r['rare_delta'], r['rare_delta_ci'])} "
            f"| {'—' if teacher is None else f'{teacher:.3f}'} |"
        )
    lines.append("")
    lines.append(f"Rarest findings (fewest training positives): {rare}. {teacher_note}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="runs/ablation")
    # The default recipe's model, size and epochs (one source of truth: TrainConfig).
    ap.add_argument("--model", default=TrainConfig.model)
    ap.add_argument("--image-size", type=int, default=TrainConfig.image_size)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--teacher-pretrain-images",
        type=int,
        default=20000,
        help="phantoms the KD variants' teacher is pretrained on before fine-tuning (0: none); ~50 min once "
        "on 2 CPU cores at 128 px for 20000, then cached",
    )
    ap.add_argument("--teacher-pretrain-epochs", type=int, default=1)
    ap.add_argument("--skip-train", action="store_true", help="reuse runs already in --out (when their settings match)")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency part (e.g. while the machine is busy)")
    ap.add_argument("--markdown", action="store_true", help="also print the README table (Markdown)")
    args = ap.parse_args()

    runs = train_variants(args)

    # Score every variant on the same validation images.
    _, baseline = load_run(runs["baseline"])
    pp = baseline.preprocess
    valid = baseline.data.load("valid", pp)  # the runs' own selection of the held-out split
    probs = {}
    for name, out in runs.items():
        model, _ = load_run(out)
        probs[name] = sigmoid(predict_logits(model, valid.images, pp.value_range))
    metrics = {name: RunRecord.load(out).metrics() for name, out in runs.items()}
    label_names = list(metrics["baseline"]["per_label"])
    rare = rarest_findings(baseline.data, valid, N_RARE)
    rare_names = [label_names[c] for c in rare]
    teacher = {name: metrics[name].get("teacher", {}) for name in runs}
    kd_teacher = next((t for t in teacher.values() if t.get("valid_macro_auc") is not None), {})
    pretrained = kd_teacher.get("pretrain_images") or 0
    stages = f"pretrained on {pretrained} separate phantoms, then fine-tuned" if pretrained else "fine-tuned"
    teacher_note = (
        f"Teacher: DenseNet-121 {stages} on the training split; its macro AUC is on the same held-out images."
    )

    print(
        f"\nAblation on {baseline.data.root} ({len(valid)} validation images), {args.model} @ {args.image_size}px, "
        f"{args.epochs} epochs, seed {args.seed}"
    )
    print(
        f"{'variant':<10} {'macro AUC':>9} {'95% CI':>15} {'Δ vs baseline':>14} {'95% CI of Δ (paired)':>22} "
        f"{'rare-' + str(N_RARE) + ' AUC':>11} {'Δ':>8} {'95% CI of Δ':>20} {'teacher':>8}"
    )
    summary = {}
    for name in runs:
        m = metrics[name]
        ci = m["macro_auc_ci"] or [float("nan")] * 2
        rare_self = paired_auc_delta(
            valid.targets[:, rare],
            probs["baseline"][:, rare],
            probs[name][:, rare],
            valid.mask[:, rare],
            n_boot=0 if name == "baseline" else args.n_boot,
            seed=args.seed,
            labels=rare_names,
        )
        if name == "baseline":
            delta, dci, rdelta, rdci = 0.0, [0.0, 0.0], 0.0, [0.0, 0.0]
        else:
            pd = paired_auc_delta(
                valid.targets, probs["baseline"], probs[name], valid.mask, n_boot=args.n_boot, seed=args.seed
            )
            delta, dci = pd["macro_delta"], pd["macro_delta_ci"]
            rdelta, rdci = rare_self["macro_delta"], rare_self["macro_delta_ci"]
        t_auc = teacher[name].get("valid_macro_auc")
        summary[name] = {
            "macro_auc": m["macro_auc"],
            "ci": ci,
            "delta": delta,
            "delta_ci": dci,
            "micro_auc": m["micro_auc"],
            "rare_mean_auc": rare_self["macro_auc_new"],
            "rare_delta": rdelta,
            "rare_delta_ci": rdci,
            "teacher_macro_auc": t_auc,
        }
        dci_, rdci_ = dci or [float("nan")] * 2, rdci or [float("nan")] * 2
        print(
            f"{name:<10} {m['macro_auc']:>9.4f} {ci[0]:>7.4f}–{ci[1]:<7.4f} {delta:>+14.4f} "
            f"{dci_[0]:>+10.4f}…{dci_[1]:<+10.4f} {rare_self['macro_auc_new']:>11.4f} {rdelta:>+8.4f} "
            f"{rdci_[0]:>+9.4f}…{rdci_[1]:<+9.4f} {'—' if t_auc is None else f'{t_auc:.4f}':>8}"
        )
    if kd_teacher:
        best = max(summary, key=lambda n: summary[n]["macro_auc"])
        beats = kd_teacher["valid_macro_auc"] > summary[best]["macro_auc"]
        how = (
            f"pretrained on {pretrained} phantoms x {kd_teacher.get('pretrain_epochs')} epochs"
            if pretrained
            else "not pretrained"
        )
        print(
            f"teacher held-out macro AUC {kd_teacher['valid_macro_auc']:.4f} ({how}): it "
            f"{'beats' if beats else 'does NOT beat'} the best student ({best}, {summary[best]['macro_auc']:.4f})"
        )
    print(f"rarest {N_RARE} findings (fewest training positives): {', '.join(rare_names)}")
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
    if args.markdown:
        print("\n" + markdown_table(summary, rare_names, teacher_note))
    result = {
        "auc": summary,
        "rare_findings": rare_names,
        "teacher": kd_teacher,
        "cost": cost,
    }
    (Path(args.out) / "ablation.json").write_text(json.dumps(result, indent=2))
    print(f"\nwritten {Path(args.out) / 'ablation.json'}")


if __name__ == "__main__":
    main()
