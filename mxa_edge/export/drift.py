"""The drift gate: is the exported model as good as the FP32 PyTorch model, per pathology?

Both models score the same validation images (the run's valid split, read with the run's
own Preprocess); ``metrics.paired_auc_delta`` gives per-pathology AUC, the paired delta
with its bootstrap CI, macro delta and agreement at 0.5. The gate fails when the macro AUC
drops by more than ``max_macro_drop`` or any pathology by more than ``max_drop``; the rule
itself is ``mxa_edge.gate``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mxa_edge.gate import DEFAULT_GATE, GateSpec, verdict
from mxa_edge.labels import LABEL_ABBREVIATIONS


@dataclass
class DriftReport:
    table: dict  # paired_auc_delta's dict + gate fields
    passed: bool
    drifted: list[str]  # pathologies past max_drop (and "macro" when the macro bound fails)

    def summary(self) -> dict:
        t = self.table
        worst = min(
            ((k, v["delta"]) for k, v in t["per_label"].items() if v["delta"] is not None),
            key=lambda kv: kv[1],
            default=(None, None),
        )
        return {
            "passed": self.passed,
            "macro_auc_ref": t["macro_auc_ref"],
            "macro_auc_new": t["macro_auc_new"],
            "macro_delta": t["macro_delta"],
            "worst_label": worst[0],
            "worst_delta": worst[1],
            "agreement_at_threshold": t["agreement_at_threshold"],
            "max_macro_drop": t["max_macro_drop"],
            "max_drop": t["max_drop"],
            "drifted": self.drifted,
            "n_images": t["n_images"],
        }


def gate(
    y_true,
    mask,
    prob_ref,
    prob_new,
    *,
    max_macro_drop: float = DEFAULT_GATE.max_macro_drop,
    max_drop: float = DEFAULT_GATE.max_drop,
    n_boot: int = 1000,
    seed: int = 0,
    spec: GateSpec | None = None,
) -> DriftReport:
    """paired_auc_delta's table judged by ``mxa_edge.gate.verdict``; ``spec`` (when given)
    replaces ``max_macro_drop``/``max_drop``."""
    from mxa_edge.metrics import paired_auc_delta

    spec = spec if spec is not None else GateSpec(max_macro_drop, max_drop)
    table = paired_auc_delta(y_true, prob_ref, prob_new, mask, n_boot=n_boot, seed=seed)
    v = verdict(table, spec)
    table["max_macro_drop"], table["max_drop"] = float(spec.max_macro_drop), float(spec.max_drop)
    if spec.mode != DEFAULT_GATE.mode:  # records written in the default mode keep their old fields
        table["gate_mode"] = spec.mode
    table["passed"] = v.passed
    return DriftReport(table, v.passed, list(v.drifted))


def plot(report: DriftReport, path: Path, title: str) -> None:
    """Grouped bars: FP32 vs exported AUC per pathology (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = [k for k, v in report.table["per_label"].items() if v["auc_ref"] is not None]
    ref = [report.table["per_label"][k]["auc_ref"] for k in names]
    new = [report.table["per_label"][k]["auc_new"] for k in names]
    x = np.arange(len(names))
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    ax.bar(x - 0.2, ref, 0.4, label="FP32 (PyTorch)")
    ax.bar(x + 0.2, new, 0.4, label="exported")
    for i, k in enumerate(names):
        if k in report.drifted:
            ax.annotate("drift", (x[i], max(ref[i], new[i])), ha="center", va="bottom", color="red", fontsize=8)
    ax.set_xticks(x, [LABEL_ABBREVIATIONS.get(k, k) for k in names])
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("ROC AUC")
    s = report.summary()
    ax.set_title(f"{title}: macro delta {s['macro_delta']:+.4f} ({'pass' if report.passed else 'FAIL'})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
