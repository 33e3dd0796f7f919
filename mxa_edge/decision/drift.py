"""The drift gate's table: is the exported model as good as the FP32 PyTorch model, per
finding, in what ``predict`` outputs?

Both models score the same HELD-OUT images (the run's valid.csv, read by its ``DataSelection``
with its own Preprocess; nothing was fitted on them). Both are calibrated and thresholded by the
run's ``DecisionRule`` (fitted on the tuning split), so the table compares the decisions predict
would print. ``metrics.paired_auc_delta`` gives, with paired bootstrap CIs: per finding the AUC
change, the sensitivity and specificity change at the threshold and the decision agreement;
macro AUC change; ECE change. The same table is computed on each slice of the CSV's own
columns (sex, age band, AP/PA): always reported, gated with ``GateSpec.subgroups``. The rule
itself is ``mxa_edge.decision.gate``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mxa_edge.data.subgroups import slice_status
from mxa_edge.decision.gate import DEFAULT_GATE, GateSpec, verdict
from mxa_edge.decision.metrics import paired_auc_delta
from mxa_edge.labels import LABEL_ABBREVIATIONS


@dataclass
class DriftReport:
    table: dict  # paired_auc_delta's dict + gate fields (+ "subgroups")
    passed: bool
    drifted: list[str]  # scopes with a failing check (findings, "macro", "all findings", "<slice> / <finding>")
    reasons: list[str]  # one line per failing check

    def summary(self) -> dict:
        """The gate in a few numbers, for the manifest, bench and the CLI."""
        t = self.table
        per = t["per_label"]

        def worst(key):
            vals = [(k, v[key]) for k, v in per.items() if v.get(key) is not None]
            return min(vals, key=lambda kv: kv[1], default=(None, None))

        auc, sens, spec, agree = (
            worst("delta"),
            worst("sensitivity_delta"),
            worst("specificity_delta"),
            worst("agreement_at_threshold"),
        )
        subgroups = {
            name: ("not evaluable: " + s["status"]) if s.get("status") else ("pass" if s.get("passed") else "FAIL")
            for name, s in (t.get("subgroups") or {}).items()
        }
        return {
            "passed": self.passed,
            "split": t.get("split"),
            "macro_auc_ref": t["macro_auc_ref"],
            "macro_auc_new": t["macro_auc_new"],
            "macro_delta": t["macro_delta"],
            "worst_label": auc[0],
            "worst_delta": auc[1],
            "worst_sensitivity": {"label": sens[0], "delta": sens[1]},
            "worst_specificity": {"label": spec[0], "delta": spec[1]},
            "min_agreement": {"label": agree[0], "agreement": agree[1]},
            "agreement_at_threshold": t["agreement_at_threshold"],
            "ece_ref": t.get("ece_ref"),
            "ece_new": t.get("ece_new"),
            "ece_delta": t.get("ece_delta"),
            "gate": t.get("gate"),
            "drifted": self.drifted,
            "reasons": self.reasons,
            "subgroups": subgroups,
            "n_images": t["n_images"],
            "gated_with": t.get("gated_with"),
            "guard": {k: (t.get("guard") or {}).get(k) for k in ("flag_rate_ref", "flag_rate_new", "agreement")}
            if t.get("guard")
            else None,
        }


def _slice_table(y, mask, ref, new, rows, thresholds, n_boot, seed, spec) -> dict:

    m = mask[rows] == 1
    n_pos, n_neg = int(np.sum(m & (y[rows] == 1))), int(np.sum(m & (y[rows] == 0)))
    status = slice_status(len(rows), n_pos, n_neg)
    if status is not None:
        return {"n_images": len(rows), "status": status, "table": None, "passed": None, "failures": []}
    table = paired_auc_delta(y[rows], ref[rows], new[rows], mask[rows], n_boot=n_boot, seed=seed, threshold=thresholds)
    v = verdict(table, replace(spec, subgroups=False))
    return {"n_images": len(rows), "status": None, "table": table, "passed": v.passed, "failures": v.reasons()}


def gate(
    y_true,
    mask,
    prob_ref,
    prob_new,
    *,
    thresholds=0.5,
    spec: GateSpec = DEFAULT_GATE,
    n_boot: int = 1000,
    seed: int = 0,
    subgroups: dict | None = None,
    split: str = "valid",
    guard: dict | None = None,
) -> DriftReport:
    """paired_auc_delta's table judged by ``mxa_edge.decision.gate.verdict``. ``prob_*`` are calibrated
    probabilities; ``thresholds`` the operating points (scalar or per finding); ``subgroups``
    maps slice names to row indices (``mxa_edge.data.subgroups.subgroup_rows``); ``split`` names
    the split the images are from (recorded, so a reader knows what produced the verdict);
    ``guard``: the input guard's paired record on the same images (``mxa_edge.decision.guard.guard_drift``),
    gated by ``spec.max_guard_flag_increase``."""

    y, m = np.asarray(y_true), np.asarray(mask)
    ref, new = np.asarray(prob_ref, dtype=np.float64), np.asarray(prob_new, dtype=np.float64)
    table = paired_auc_delta(y, ref, new, m, n_boot=n_boot, seed=seed, threshold=thresholds)
    table["subgroups"] = {
        name: _slice_table(y, m, ref, new, np.asarray(rows), thresholds, n_boot, seed, spec)
        for name, rows in (subgroups or {}).items()
    }
    if guard is not None:
        table["guard"] = guard
    v = verdict(table, spec)
    table.update({"gate": spec.to_dict(), "split": split, "passed": v.passed, "failures": v.reasons()})
    return DriftReport(table, v.passed, list(v.drifted), v.reasons())


def plot(report: DriftReport, path: Path, title: str) -> None:
    """AUC per finding (FP32 vs exported) and the change in sensitivity / specificity at the
    operating points (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    per = report.table["per_label"]
    names = [k for k, v in per.items() if v["auc_ref"] is not None]
    x = np.arange(len(names))
    ticks = [LABEL_ABBREVIATIONS.get(k, k) for k in names]
    fig = Figure(figsize=(10, 6.5))
    ax, ax2 = fig.subplots(2, 1)
    ref = [per[k]["auc_ref"] for k in names]
    new = [per[k]["auc_new"] for k in names]
    ax.bar(x - 0.2, ref, 0.4, label="FP32 (PyTorch)")
    ax.bar(x + 0.2, new, 0.4, label="exported")
    for i, k in enumerate(names):
        if k in report.drifted:
            ax.annotate("drift", (x[i], max(ref[i], new[i])), ha="center", va="bottom", color="red", fontsize=8)
    ax.set_xticks(x, ticks)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("ROC AUC")
    s = report.summary()
    ax.set_title(f"{title}: macro AUC Δ {s['macro_delta']:+.4f} ({'pass' if report.passed else 'FAIL'})")
    ax.legend(loc="lower right")
    sens = [per[k].get("sensitivity_delta") or 0.0 for k in names]
    spec = [per[k].get("specificity_delta") or 0.0 for k in names]
    ax2.bar(x - 0.2, sens, 0.4, label="Δ sensitivity")
    ax2.bar(x + 0.2, spec, 0.4, label="Δ specificity")
    bound = (report.table.get("gate") or {}).get("max_sens_drop")
    if bound is not None:
        ax2.axhline(-bound, color="red", lw=0.8, ls="--", label=f"max drop {bound:g} (or 1/n)")
    ax2.axhline(0.0, color="black", lw=0.6)
    ax2.set_xticks(x, ticks)
    ax2.set_ylabel("change at the threshold")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
