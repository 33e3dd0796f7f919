"""Figures for the report, as PNG data URIs: ROC small multiples and the reliability diagram.

matplotlib's object API (``Figure``, rendered by Agg on ``savefig``) — no pyplot, no global
backend switch. ROC points are computed here with numpy (ties form one step, as sklearn).
"""

from __future__ import annotations

import base64
import io

import numpy as np

REF_COLOUR = "#1f5fa8"
NEW_COLOUR = "#d9641e"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1), one point per distinct score; needs both classes."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tied group
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def label_counts(targets: np.ndarray, mask: np.ndarray, c: int) -> tuple[int, int]:
    m = mask[:, c] == 1
    n_pos = int(np.sum(targets[m, c] == 1))
    return n_pos, int(m.sum()) - n_pos


def roc_grid(labels, targets, mask, curves: list, aucs: list[dict], cols: int = 4) -> bytes:
    """One panel per finding; ``curves`` are Scores (probs may be None), ``aucs`` their per-label AUC."""
    from matplotlib.figure import Figure

    rows = -(-len(labels) // cols)
    fig = Figure(figsize=(cols * 2.55, rows * 2.55), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    styles = [dict(color=REF_COLOUR, lw=1.6), dict(color=NEW_COLOUR, lw=1.4, ls="--")]
    for k, ax in enumerate(axes.flat):
        if k >= len(labels):
            ax.set_axis_off()
            continue
        name = labels[k]
        n_pos, n_neg = label_counts(targets, mask, k)
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.set_title(f"{name}", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel("sensitivity", fontsize=7)
        if k // cols == rows - 1 or k + cols >= len(labels):
            ax.set_xlabel("1 − specificity", fontsize=7)
        if n_pos == 0 or n_neg == 0:
            ax.text(
                0.5,
                0.5,
                f"not evaluable\n{n_pos} positive, {n_neg} negative",
                ha="center",
                va="center",
                fontsize=8,
                color="#a00000",
                transform=ax.transAxes,
            )
            continue
        m = mask[:, k] == 1
        y = targets[m, k]
        for scores, auc, style in zip(curves, aucs, styles):
            if scores.probs is None:
                continue
            fpr, tpr = roc_points(y, scores.probs[m, k])
            tag = "FP32" if style is styles[0] else "exported"
            ax.plot(fpr, tpr, label=f"{tag} {auc[name]:.3f}", **style)
        ax.legend(loc="lower right", fontsize=6, frameon=False, title=f"n+ {n_pos}, n− {n_neg}", title_fontsize=6)
    return _figure_png(fig, dpi=90)


def reliability_diagram(reliabilities: list) -> bytes:
    """Observed frequency against mean predicted probability (all evaluated cells pooled), one
    curve per ``scores.Reliability`` that has one: FP32 before calibration (dotted), FP32 and the
    exported model after the decision rule (solid / dashed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":", label="perfect calibration")
    drawn = [r for r in reliabilities if r.curve is not None]
    for i, r in enumerate(drawn):
        rel = r.curve
        colour = REF_COLOUR if r.model == "ref" else NEW_COLOUR
        if not r.calibrated:
            style = dict(marker="^", ls=":", lw=1.2, mfc="white", alpha=0.85)
        elif r.model == "ref":
            style = dict(marker="o", ls="-", lw=1.4)
        else:
            style = dict(marker="s", ls="--", lw=1.3)
        x = np.array([v if v is not None else np.nan for v in rel["mean_predicted"]])
        y = np.array([v if v is not None else np.nan for v in rel["observed_frequency"]])
        ok = np.isfinite(x) & np.isfinite(y)
        ece = "—" if rel["ece"] is None else f"{rel['ece']:.3f}"
        ax.plot(x[ok], y[ok], ms=4, color=colour, label=f"{r.label}: ECE {ece}", **style)
        edges = np.asarray(rel["bin_edges"])
        width = (edges[1] - edges[0]) * 0.9 / len(drawn)
        offset = (i - (len(drawn) - 1) / 2) * width
        hist.bar(
            np.asarray(rel["bin_centers"]) + offset,
            rel["counts"],
            width=width,
            color=colour,
            alpha=0.45 if not r.calibrated else 0.85,
            hatch=None if r.calibrated else "///",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency")
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title("Reliability (all findings pooled, 15 bins)", fontsize=10)
    hist.set_yscale("symlog")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("cells")
    return _figure_png(fig, dpi=90)


def guard_histogram(held_out: np.ndarray, challenge: dict, threshold: float) -> bytes:
    """Input-guard scores: held-out frontal images (should lie left of the threshold) against
    images the guard should flag (right of it), on a log axis (scores span an order of magnitude)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    everything = np.concatenate([np.asarray(held_out)] + [np.asarray(v) for v in challenge.values()])
    lo, hi = max(float(everything.min()), 1e-3), float(everything.max())
    bins = np.geomspace(lo * 0.95, hi * 1.05, 40)
    ax.hist(held_out, bins=bins, color=NEW_COLOUR, alpha=0.85, label=f"held-out frontal (n={len(held_out)})")
    for (kind, scores), colour in zip(challenge.items(), ("#b2182b", "#7570b3", "#e7298a", "#66a61e")):
        ax.hist(scores, bins=bins, histtype="step", lw=1.5, color=colour, label=f"{kind} (n={len(scores)})")
    ax.axvline(threshold, color="black", ls="--", lw=1.0, label=f"threshold {threshold:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("input-guard score (features and image statistics; ~1 for a typical training image)")
    ax.set_ylabel("images")
    ax.legend(fontsize=7, loc="upper right")
    return _figure_png(fig, dpi=90)
