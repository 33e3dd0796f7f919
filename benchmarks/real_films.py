"""Which recipe learns most from a few hundred real films on 2 CPU cores (issue: real adult films).

Trains one student per recipe on a CheXpert-layout root of real radiographs (default: the
975-film NIH ChestX-ray14 sample in ../shared), then prints side by side:
  * the tuning-split macro AUC: the ONLY number the winner is chosen by (the tuning split is
    carved from train.csv; nothing is selected on the held-out split);
  * the held-out macro AUC over the findings with at least --min-positives held-out positives,
    with its 95% bootstrap CI, and the paired bootstrap CI of its difference against the first
    recipe (same images, same resamples);
  * the training time of each recipe (2 CPU cores; the ISA is printed beside it).
Then the learning curve of the winner: 25 / 50 / 100 % of the training images (same tuning and
held-out split), held-out macro AUC with CIs.

Recipes (``RECIPES``) vary one thing at a time against the first: image size and epochs at
equal compute (size^2 x epochs), more epochs, class balance, stronger augmentation, KD or not,
MXA or not, a student pretrained on phantoms (``--student-weights`` from a phantom run: does
phantom v2 transfer to real films?). The winner by tuning AUC is what the ``small-real`` preset
(``mxa_edge/torch_side/training/config.py``) records; the script says whether it still is.

Run:  .venv/bin/python benchmarks/real_films.py [--data ../shared/data/nih-cxr14-sample]
          [--out runs/real-films] [--only NAME ...] [--skip-train] [--no-curve] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from mxa_edge.decision.metrics import evaluate, paired_auc_delta, sigmoid
from mxa_edge.formats import RunRecord, is_run
from mxa_edge.labels import CHEXPERT_LABELS, LABEL_ABBREVIATIONS
from mxa_edge.support.machine import isa_line
from mxa_edge.torch_side.models.weights import load_run
from mxa_edge.torch_side.training.config import PRESETS, TrainConfig
from mxa_edge.torch_side.training.loop import predict_logits
from mxa_edge.torch_side.training.pipeline import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-cxr14-sample"
# Every recipe is this starting point with one change; the tuning split's winner became the
# small-real preset (this script checks that it still is).
BASE = dict(model="m0", image_size=128, epochs=24, class_balanced=True, kd=True, mxa=True)
RECIPES: dict[str, dict] = {
    "start": {},
    "phantom default": {k: getattr(TrainConfig, k) for k in BASE},  # the phantom demo's recipe on real films
    "no KD": dict(kd=False),
    "no MXA": dict(mxa=False),
    "no class balance": dict(class_balanced=False),
    "stronger augment": dict(augment="rand-m9-mstd1"),
    "equal compute, larger images": "equal-compute",  # filled in by recipes()
    "2x epochs": "2x-epochs",
    "224 px x 16 epochs (the deployment size, 2x compute)": dict(image_size=224, epochs=16),
    # does phantom pretraining transfer to real films? (the teacher sees 5,000 separate phantoms first)
    "teacher pretrained on phantoms": dict(teacher_pretrain_images=5000),
}


def _equal_compute(base: dict, size: int) -> dict:
    epochs = max(1, round(base["epochs"] * (base["image_size"] / size) ** 2))
    return dict(image_size=size, epochs=epochs)


def recipes() -> dict[str, dict]:
    out = {}
    for name, change in RECIPES.items():
        if change == "equal-compute":
            change = _equal_compute(BASE, BASE["image_size"] + 32)
            name = f"{change['image_size']} px x {change['epochs']} epochs (equal compute)"
        elif change == "2x-epochs":
            change = dict(epochs=2 * BASE["epochs"])
            name = f"{change['epochs']} epochs (2x compute)"
        out[name] = {**BASE, **change}
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def train_recipe(name: str, values: dict, args, **extra) -> tuple[Path, float | None]:
    out = Path(args.out) / slug(name)
    cfg = TrainConfig(data=str(args.data), out=str(out), seed=args.seed, **{**values, **extra})
    if args.skip_train and is_run(out):
        done = RunRecord.load(out).train_config
        # "device" is recorded resolved ("auto" -> "cpu"); "out" and "extra" say nothing of the recipe
        if all(done.get(k) == v for k, v in cfg.to_dict().items() if k not in ("out", "extra", "device")):
            return out, None
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    train(cfg)
    return out, time.perf_counter() - t


def scores(run: Path, split: str):
    model, record = load_run(run)
    arrays = record.data.load(split, record.preprocess)
    return arrays, sigmoid(predict_logits(model, arrays.images, record.preprocess.value_range))


def eligible(arrays, min_positives: int) -> list[int]:
    pos = ((arrays.targets == 1) & (arrays.mask > 0)).sum(axis=0)
    neg = ((arrays.targets == 0) & (arrays.mask > 0)).sum(axis=0)
    return [int(c) for c in np.flatnonzero((pos >= min_positives) & (neg > 0))]


def compare(runs: dict[str, Path], args, reference: str) -> dict:
    """Tuning and held-out macro AUC per run, held-out paired deltas against ``reference``."""
    valid, ref = scores(runs[reference], "valid")
    cols = eligible(valid, args.min_positives)
    labels = [CHEXPERT_LABELS[c] for c in cols]
    rows = {}
    for name, run in runs.items():
        tune, tune_prob = scores(run, "tune")
        tcols = eligible(tune, 1)
        tlabels = [CHEXPERT_LABELS[c] for c in tcols]
        tune_auc = evaluate(tune.targets[:, tcols], tune_prob[:, tcols], tune.mask[:, tcols], labels=tlabels, n_boot=0)
        _, prob = scores(run, "valid")
        pd = paired_auc_delta(
            valid.targets[:, cols],
            ref[:, cols],
            prob[:, cols],
            valid.mask[:, cols],
            n_boot=args.n_boot,
            seed=0,
            labels=labels,
        )
        alone = evaluate(valid.targets[:, cols], prob[:, cols], valid.mask[:, cols], labels=labels, n_boot=args.n_boot)
        rows[name] = {
            "run": str(run),
            "tune_macro_auc": tune_auc["macro_auc"],
            "valid_macro_auc": pd["macro_auc_new"],
            "valid_macro_auc_ci": alone["macro_auc_ci"],
            "delta": pd["macro_delta"],
            "delta_ci": pd["macro_delta_ci"],
            "per_label": {k: v["auc_new"] for k, v in pd["per_label"].items()},
        }
    return {"labels": labels, "n_valid": len(valid), "rows": rows}


def _fmt_ci(ci) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", default="runs/real-films")
    ap.add_argument("--only", nargs="*", help="recipe names (slugs) to train; default all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--min-positives", type=int, default=9, help="held-out positives a finding needs to count")
    ap.add_argument("--skip-train", action="store_true", help="reuse runs in --out whose settings match")
    ap.add_argument("--no-curve", action="store_true", help="skip the learning curve")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not (args.data / "train.csv").is_file():
        raise SystemExit(f"{args.data}: not a CheXpert-layout root (no train.csv); pass --data")

    print(f"machine: {isa_line()}", flush=True)
    runs, seconds = {}, {}
    for name, values in recipes().items():
        if args.only and slug(name) not in args.only and name not in args.only:
            continue
        runs[name], seconds[name] = train_recipe(name, values, args)
        took = "reused" if seconds[name] is None else f"{seconds[name]:.0f} s"
        print(f"trained {name!r} ({took}) -> {runs[name]}", flush=True)
    reference = next(iter(runs))
    table = compare(runs, args, reference)
    winner = max(table["rows"], key=lambda n: table["rows"][n]["tune_macro_auc"])
    print(
        f"\n{args.data.name}: {table['n_valid']} held-out images; macro AUC over {len(table['labels'])} findings with "
        f">= {args.min_positives} held-out positives ({', '.join(LABEL_ABBREVIATIONS[x] for x in table['labels'])})"
    )
    print(
        f"{'recipe':<38} {'tune AUC':>8} {'held-out AUC (95% CI)':>24} "
        f"{'Δ vs ' + reference + ' (paired CI)':>34} {'train':>7}"
    )
    for name, r in table["rows"].items():
        d = "—" if name == reference else f"{r['delta']:+.3f} ({r['delta_ci'][0]:+.3f}, {r['delta_ci'][1]:+.3f})"
        t = "reused" if seconds.get(name) is None else f"{seconds[name]:.0f} s"
        mark = " *" if name == winner else ""
        print(
            f"{name + mark:<38} {r['tune_macro_auc']:>8.3f} {r['valid_macro_auc']:>8.3f} "
            f"({_fmt_ci(r['valid_macro_auc_ci'])}) "
            f"{d:>34} {t:>7}"
        )
    print(f"* chosen on the tuning split: {winner}")
    preset = {**BASE, **PRESETS["small-real"].values}
    same = all(recipes()[winner].get(k) == v for k, v in preset.items())
    print(f"the small-real preset {'IS' if same else 'is NOT'} the winner ({PRESETS['small-real'].values})")

    curve = {}
    if not args.no_curve:
        values = recipes()[winner]
        n_train = RunRecord.load(runs[winner]).data.counts["train"]
        for share in (0.25, 0.5):
            name = f"{winner} @ {int(share * 100)}%"
            run, _ = train_recipe(
                name, values, args, limit_train=max(values.get("batch_size", 64), int(share * n_train))
            )
            curve[share] = run
        curve[1.0] = runs[winner]
        ct = compare({f"{int(s * 100)}%": r for s, r in sorted(curve.items())}, args, "100%")
        print("\nlearning curve (held-out macro AUC, 95% CI):")
        for name, r in ct["rows"].items():
            print(
                f"  {name:>5} of {n_train} training images: {r['valid_macro_auc']:.3f} "
                f"({_fmt_ci(r['valid_macro_auc_ci'])})"
            )
        curve = ct["rows"]
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": isa_line(), "table": table, "winner": winner, "curve": curve, "seconds": seconds},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
