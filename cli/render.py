"""Rich renderings of library results (tables only; no computation here)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _num(x, fmt="{:.3f}") -> str:
    return "—" if x is None else fmt.format(x)


def metrics_table(metrics: dict, title: str = "Validation metrics") -> Table:
    table = Table(title=title, title_justify="left")
    for col, just in (
        ("Finding", "left"),
        ("AUC", "right"),
        ("95% CI", "right"),
        ("pos/neg", "right"),
        ("F1@0.5", "right"),
        ("Acc@0.5", "right"),
    ):
        table.add_column(col, justify=just)
    for name, m in metrics["per_label"].items():
        ci = m.get("auc_ci")
        auc = m.get("auc")
        table.add_row(
            name,
            _num(auc) if auc is not None else "[dim]not evaluable[/]",
            f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—",
            f"{m.get('n_pos', 0)}/{m.get('n_neg', 0)}",
            _num(m.get("f1")),
            _num(m.get("accuracy")),
        )
    ci = metrics.get("macro_auc_ci")
    table.add_section()
    table.add_row(
        "[bold]macro AUC[/]",
        f"[bold]{_num(metrics.get('macro_auc'))}[/]",
        f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—",
        f"{len(metrics.get('labels_evaluated', []))} labels",
        _num(metrics.get("f1_macro")),
        _num(metrics.get("accuracy")),
    )
    table.add_row("micro AUC", _num(metrics.get("micro_auc")), "", "", "", "")
    if metrics.get("ece") is not None:
        table.add_row("ECE", _num(metrics.get("ece")), "", "", "", "")
    return table


def print_metrics(console: Console, metrics: dict, title: str = "Validation metrics") -> None:
    console.print(metrics_table(metrics, title))
    cov = metrics.get("roi_localization")
    if cov:
        console.print(
            f"MXA ROI vs ground-truth boxes ({cov['n']} finding boxes): "
            f"hit rate {_num(cov.get('hit_rate'))}, mean coverage {_num(cov.get('mean_coverage'))}, mean IoU "
            f"{_num(cov.get('mean_iou'))}"
        )
