"""Latency (batch-1 p50, log x) against macro AUC, one labelled point per measured row."""

from __future__ import annotations

from pathlib import Path

from mxa_edge.support.fileio import atomic_path
from mxa_edge.support.outputs import BENCH_PNG_SOFTWARE, PNG_SOFTWARE_KEY


def plot_latency_auc(result: dict, path) -> Path | None:
    """Write the plot to ``path`` (PNG); None when matplotlib is not installed or no row has
    both a latency and an AUC. Uses the Agg canvas directly (no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    pts = [r for r in result["rows"] if r.get("p50_ms") and r.get("macro_auc") is not None]
    if not pts:
        return None
    fig = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    models = sorted({r["group"] for r in pts})
    markers = "osD^v<>P*X"
    for i, g in enumerate(models):
        sel = [r for r in pts if r["group"] == g]
        ax.scatter(
            [r["p50_ms"] for r in sel],
            [r["macro_auc"] for r in sel],
            marker=markers[i % len(markers)],
            label=sel[0]["model"] if len(models) > 1 else None,
            zorder=3,
        )
        for r in sel:
            label = f"{r['backend']} {r['precision']}" + (" (rejected)" if r["status"] != "pass" else "")
            ax.annotate(label, (r["p50_ms"], r["macro_auc"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    s = result["settings"]
    ax.set_xlabel(f"latency p50, batch {s['latency_batch']} (ms, log scale; {s['threads']} threads)")
    ax.set_ylabel("macro AUC (validation)")
    ax.set_title("Latency vs accuracy per backend")
    ax.grid(True, which="both", alpha=0.3)
    if len(models) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()

    path = Path(path)
    with atomic_path(path) as tmp:  # no half-written PNG if the process dies
        # tagged as ours: a later bench may replace it (``mxa_edge.support.outputs``)
        fig.savefig(tmp, dpi=120, format="png", metadata={PNG_SOFTWARE_KEY: BENCH_PNG_SOFTWARE})
    return path
