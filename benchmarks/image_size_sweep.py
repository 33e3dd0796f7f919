"""Default image size of the demo run (issue 17 item 4): 112 / 128 / 160 / 224 px at an equal budget.

Trains the default recipe (M0 + MXA, KD from the cached fine-tuned teacher, seed 0, the
embedded phantoms) once per image size. The budget is the default run's compute: 12 epochs at
128 px, scaled by pixel count (epochs = round(12 x (128 / size)^2), at least 1), so a larger
image gets fewer epochs and every run costs about the same ten minutes on 2 cores. Each run's
wall time is printed so that rule can be checked.

The size is *chosen* on the tuning split (the best tuning-split macro AUC of the selected
epoch, the number the run itself selects on), and the held-out macro AUC with its 95% CI is
*reported* next to it: choosing on the held-out split would make its figure a fitted one.

Run:  .venv/bin/python benchmarks/image_size_sweep.py [--sizes 112,128,160,224] [--out runs/size-sweep]
      [--reuse runs/default=128] [--no-kd] [--markdown]
Expect ~10 min per size on 2 cores (plus the teacher's fine-tuning once, if not cached).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_SIZE, DEFAULT_EPOCHS = 128, 12


def budget_epochs(size: int) -> int:
    """Epochs at ``size`` costing what 12 epochs cost at 128 px (cost ~ pixel count)."""
    return max(1, round(DEFAULT_EPOCHS * (DEFAULT_SIZE / size) ** 2))


def summarise(run: Path, size: int, epochs: int, wall: float | None) -> dict:
    from mxa_edge.formats import RunRecord

    m = RunRecord.load(run).metrics()
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    student = [r for r in rows if r.get("task") == "student" and r.get("tune_macro_auc") is not None]
    selected = next((r for r in student if r["epoch"] == m["selected_epoch"]), None)
    return {
        "size": size,
        "epochs": epochs,
        "run": str(run),
        "wall_s": wall if wall is not None else m.get("train_seconds"),
        "tune_macro_auc": selected["tune_macro_auc"] if selected else None,
        "heldout_macro_auc": m["macro_auc"],
        "heldout_macro_auc_ci": m["macro_auc_ci"],
        "per_label": {k: v["auc"] for k, v in m["per_label"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="112,128,160,224")
    ap.add_argument("--out", default="runs/size-sweep")
    ap.add_argument("--data", default=None, help="CheXpert-layout root (default: the embedded phantoms)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-kd",
        action="store_true",
        help="students without distillation: the teacher is fine-tuned at each image size (its cost grows with "
        "the pixels too), so this isolates the student's resolution and costs a fraction of the time",
    )
    ap.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="RUN=SIZE",
        help="an existing run of the default recipe at SIZE (e.g. runs/default=128): not retrained",
    )
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    args = ap.parse_args()

    from mxa_edge.formats import is_run
    from mxa_edge.torch_side.training.config import TrainConfig
    from mxa_edge.torch_side.training.pipeline import train

    reuse = {int(s): Path(r) for r, s in (item.rsplit("=", 1) for item in args.reuse)}
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        epochs = budget_epochs(size)
        run, wall = reuse.get(size, Path(args.out) / f"px{size}"), None
        if not is_run(run):
            t = time.perf_counter()
            cfg = TrainConfig(data=args.data, out=str(run), image_size=size, epochs=epochs, seed=args.seed)
            if args.no_kd:
                cfg.kd, cfg.teacher = False, "none"
            train(cfg)
            wall = time.perf_counter() - t
            print(f"trained {size} px, {epochs} epochs, in {wall:.0f} s -> {run}", flush=True)
        results.append(summarise(run, size, epochs, wall))

    best = max(results, key=lambda r: r["tune_macro_auc"] or -1.0)
    print(f"\n{'size':>5} {'epochs':>6} {'wall s':>7} {'tuning macro AUC':>17} {'held-out macro AUC (95% CI)':>29}")
    for r in results:
        lo, hi = r["heldout_macro_auc_ci"]
        mark = "  <- chosen (tuning split)" if r is best else ""
        print(
            f"{r['size']:>5} {r['epochs']:>6} {r['wall_s']:>7.0f} {r['tune_macro_auc']:>17.3f} "
            f"{r['heldout_macro_auc']:>10.3f} ({lo:.3f}–{hi:.3f}){mark}"
        )
    if args.markdown:
        print(
            "\n| image size | epochs | wall (s) | tuning macro AUC | held-out macro AUC (95% CI) |"
            "\n|---|---|---|---|---|"
        )
        for r in results:
            lo, hi = r["heldout_macro_auc_ci"]
            b = "**" if r is best else ""
            print(
                f"| {b}{r['size']} px{b} | {r['epochs']} | {r['wall_s']:.0f} | {b}{r['tune_macro_auc']:.3f}{b} | "
                f"{r['heldout_macro_auc']:.3f} ({lo:.3f}–{hi:.3f}) |"
            )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    out = Path(args.out) / "size-sweep.json"
    out.write_text(json.dumps({"chosen": best["size"], "results": results}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
