"""Paired comparison of two training runs on the same held-out images (issue 18 item 3:
MXA fusion "zoom" vs "paste", but any two runs of the same data).

For run A (the reference) and run B, on the held-out split (valid.csv) of A's data selection:
  * macro AUC and every finding's AUC, with B - A and its paired bootstrap CI
    (``metrics.paired_auc_delta``: each resample draws the same images for both runs);
  * the rare findings: the ``--rare`` findings with the fewest held-out positives, each and
    their mean (the same paired bootstrap on their columns);
  * ROI localization of the last MXA block against the phantom's ground-truth boxes
    (``evaluation.roi_localization``, as ``mxa-edge eval`` reports it): coverage, hit rate
    and IoU of each run with its random-position baseline, and B - A with a paired CI over
    the same image resamples.
AUCs are of the runs' calibrated probabilities (what predict outputs; Platt scaling is
monotone, so the AUCs are the raw logits' too).

Run:  .venv/bin/python benchmarks/fusion_ablation.py runs/default runs/fusion-paste [--json OUT] [--markdown]
Both runs must have been evaluated on the same held-out images (same data fingerprint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mxa_edge.decision.evaluation import _run_outputs, read_boxes, roi_localization
from mxa_edge.decision.metrics import BOX_METRICS, paired_auc_delta
from mxa_edge.formats import RunRecord
from mxa_edge.labels import CHEXPERT_LABELS


def describe(run: RunRecord) -> str:
    mxa = run.model.mxa
    fusion = "no MXA" if mxa is None else f"MXA {mxa.placement}, fusion {mxa.fusion}"
    return f"{run.path} ({run.model_name}; {fusion}; seed {run.train_config.get('seed', '?')})"


def compare(run_a: Path, run_b: Path, *, n_boot: int = 1000, seed: int = 0, rare: int = 5) -> dict:
    a, b = RunRecord.load(run_a), RunRecord.load(run_b)
    fa, fb = a.data.fingerprint.get("valid"), b.data.fingerprint.get("valid")
    if fa is None or fa != fb:
        raise SystemExit(
            f"the runs were not evaluated on the same held-out images (valid fingerprints {fa} and {fb}): "
            "a paired comparison needs the same data"
        )
    outputs, arrays = {}, None
    for name, run in (("a", a), ("b", b)):
        # Each run at its own preprocessing (image size); the images and their order are the same.
        split = run.data.load("valid", run.preprocess)
        arrays = split if arrays is None else arrays
        logits, rois = _run_outputs(run, split, run.preprocess)
        outputs[name] = {"probs": run.decision.probabilities(logits), "rois": rois}

    auc = paired_auc_delta(
        arrays.targets,
        outputs["a"]["probs"],
        outputs["b"]["probs"],
        arrays.mask,
        n_boot=n_boot,
        seed=seed,
        labels=CHEXPERT_LABELS,
    )
    evaluated = auc["labels_evaluated"]
    rare_labels = sorted(evaluated, key=lambda k: (auc["per_label"][k]["n_pos"], k))[:rare]

    # The rare findings together: the same paired bootstrap on their columns only.
    cols = [CHEXPERT_LABELS.index(k) for k in rare_labels]
    rare_auc = paired_auc_delta(
        arrays.targets[:, cols],
        outputs["a"]["probs"][:, cols],
        outputs["b"]["probs"][:, cols],
        arrays.mask[:, cols],
        n_boot=n_boot,
        seed=seed,
        labels=rare_labels,
    )

    localization = None
    boxes = read_boxes(Path(a.data.root))
    if boxes and outputs["a"]["rois"] is not None and outputs["b"]["rois"] is not None:
        ra, rb = outputs["a"]["rois"], outputs["b"]["rois"]
        # Same seed: the same image resamples in both calls. roi_localization's init_box slot
        # takes any boxes on the same images; here it carries run A's, so its model_minus_this
        # is B - A with a paired CI.
        loc_a = roi_localization(
            ra, arrays, boxes, None, init_unavailable="not computed here", n_boot=n_boot, seed=seed
        )
        loc_b = roi_localization(rb, arrays, boxes, ra, n_boot=n_boot, seed=seed)
        if loc_a is not None and loc_b is not None:
            localization = {
                "a": {k: loc_a[k] for k in (*BOX_METRICS, *(f"{m}_ci" for m in BOX_METRICS))},
                "b": {k: loc_b[k] for k in (*BOX_METRICS, *(f"{m}_ci" for m in BOX_METRICS))},
                "random_box_a": {m: loc_a["baselines"]["random_box"][m] for m in BOX_METRICS},
                "random_box_b": {m: loc_b["baselines"]["random_box"][m] for m in BOX_METRICS},
                "b_minus_a": loc_b["baselines"]["init_box"]["model_minus_this"],
                "n_boxes": loc_b["n"],
                "n_images": loc_b["n_images"],
                "what": "the last MXA block's box against the phantom's finding boxes "
                "(No Finding and Support Devices skipped, as mxa-edge eval does)",
            }
    return {
        "run_a": describe(a),
        "run_b": describe(b),
        "split": "valid",
        "n_images": auc["n_images"],
        "n_boot": n_boot,
        "ci_level": auc["ci_level"],
        "macro_auc": {
            "a": auc["macro_auc_ref"],
            "b": auc["macro_auc_new"],
            "b_minus_a": auc["macro_delta"],
            "ci": auc["macro_delta_ci"],
        },
        "rare_findings": rare_labels,
        "rare_mean_auc": {
            "a": rare_auc["macro_auc_ref"],
            "b": rare_auc["macro_auc_new"],
            "b_minus_a": rare_auc["macro_delta"],
            "ci": rare_auc["macro_delta_ci"],
        },
        "per_label": {
            k: {
                "a": v["auc_ref"],
                "b": v["auc_new"],
                "b_minus_a": v["delta"],
                "ci": v["delta_ci"],
                "n_pos": v["n_pos"],
            }
            for k, v in auc["per_label"].items()
        },
        "localization": localization,
        "labels_evaluated": evaluated,
    }


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _delta(d, ci) -> str:
    if d is None:
        return "—"
    text = f"{d:+.3f}"
    if ci:
        text += f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" *" if ci[0] > 0 or ci[1] < 0 else "")
    return text


def render(result: dict) -> str:
    lines = [
        f"A: {result['run_a']}",
        f"B: {result['run_b']}",
        f"held-out split, {result['n_images']} images; B - A with paired bootstrap "
        f"{result['ci_level']:.0%} CIs ({result['n_boot']} resamples; * = CI excludes 0)",
        "",
        f"{'metric':<40}{'A':>8}{'B':>8}  B - A [CI]",
    ]
    m = result["macro_auc"]
    lines.append(f"{'macro AUC':<40}{_f(m['a']):>8}{_f(m['b']):>8}  {_delta(m['b_minus_a'], m['ci'])}")
    r = result["rare_mean_auc"]
    name = f"mean AUC, {len(result['rare_findings'])} rarest findings"
    lines.append(f"{name:<40}{_f(r['a']):>8}{_f(r['b']):>8}  {_delta(r['b_minus_a'], r['ci'])}")
    for k in result["rare_findings"]:
        v = result["per_label"][k]
        name = f"AUC {k} (n+={v['n_pos']})"
        lines.append(f"{name:<40}{_f(v['a']):>8}{_f(v['b']):>8}  {_delta(v['b_minus_a'], v['ci'])}")
    loc = result["localization"]
    if loc:
        for metric in BOX_METRICS:
            d = loc["b_minus_a"][metric]
            name = f"ROI {metric.replace('_', ' ')} (random A/B)"
            lines.append(
                f"{name:<40}{_f(loc['a'][metric]):>8}{_f(loc['b'][metric]):>8}  {_delta(d['delta'], d['ci'])}"
                f"   ({_f(loc['random_box_a'][metric])} / {_f(loc['random_box_b'][metric])})"
            )
        lines.append(f"  (localization: {loc['n_boxes']} finding boxes on {loc['n_images']} images)")
    lines += ["", "every finding:", f"{'finding':<40}{'A':>8}{'B':>8}  B - A [CI]"]
    for k, v in result["per_label"].items():
        name = f"{k} (n+={v['n_pos']})"
        lines.append(f"{name:<40}{_f(v['a']):>8}{_f(v['b']):>8}  {_delta(v['b_minus_a'], v['ci'])}")
    return "\n".join(lines)


def _md_delta(d, ci) -> str:
    if d is None:
        return "—"
    text = f"{d:+.3f}" + (f" ({ci[0]:+.3f}…{ci[1]:+.3f})" if ci else "")
    return f"**{text}**" if ci and (ci[0] > 0 or ci[1] < 0) else text


def render_markdown(result: dict, name_a: str = "A", name_b: str = "B") -> str:
    """The README's table: macro AUC, the rarest findings, localization; B - A with paired CIs."""
    rows = [
        f"| held-out ({result['n_images']} images) | {name_a} | {name_b} | {name_b} − {name_a} (paired 95% CI) |",
        "|---|---|---|---|",
    ]
    m, r = result["macro_auc"], result["rare_mean_auc"]
    rows.append(f"| macro AUC | {_f(m['a'])} | {_f(m['b'])} | {_md_delta(m['b_minus_a'], m['ci'])} |")
    rows.append(
        f"| mean AUC, {len(result['rare_findings'])} rarest findings | {_f(r['a'])} | {_f(r['b'])} | "
        f"{_md_delta(r['b_minus_a'], r['ci'])} |"
    )
    for k in result["rare_findings"]:
        v = result["per_label"][k]
        rows.append(
            f"| {k} AUC ({v['n_pos']} positives) | {_f(v['a'])} | {_f(v['b'])} | {_md_delta(v['b_minus_a'], v['ci'])} |"
        )
    loc = result["localization"]
    if loc:
        for metric in BOX_METRICS:
            d = loc["b_minus_a"][metric]
            rows.append(
                f"| ROI {metric.replace('_', ' ')} (random-position box) | {_f(loc['a'][metric])} "
                f"({_f(loc['random_box_a'][metric])}) | {_f(loc['b'][metric])} ({_f(loc['random_box_b'][metric])}) | "
                f"{_md_delta(d['delta'], d['ci'])} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_a", type=Path, help="reference run (e.g. runs/default: zoom)")
    p.add_argument("run_b", type=Path, help="compared run (e.g. runs/fusion-paste)")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table (README)")
    p.add_argument("--rare", type=int, default=5, help="how many findings with the fewest held-out positives to show")
    args = p.parse_args(argv)
    result = compare(args.run_a, args.run_b, n_boot=args.n_boot, seed=args.seed, rare=args.rare)
    print(render(result))
    if args.markdown:
        print()
        print(render_markdown(result, args.run_a.name, args.run_b.name))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
