"""Rich renderings of library results (tables only; no computation here)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _num(x, fmt="{:.3f}") -> str:
    return "—" if x is None else fmt.format(x)


def _with_ci(value, ci) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} ({ci[0]:.2f}–{ci[1]:.2f})" if ci else f"{value:.3f}"


def metrics_table(metrics: dict, title: str = "Held-out metrics") -> Table:
    """Per finding: AUC with its CI, and the decisions at the run's operating points
    (sensitivity and specificity with CIs; thresholds on the calibrated probability)."""
    table = Table(
        title=title, title_justify="left", caption="(95% bootstrap CIs; thresholds on the calibrated probability)"
    )
    for col in ("Finding", "AUC", "pos/neg", "threshold", "sensitivity", "specificity"):
        table.add_column(col, justify="left" if col == "Finding" else "right")
    for name, m in metrics["per_label"].items():
        auc = m.get("auc")
        table.add_row(
            name,
            _with_ci(auc, m.get("auc_ci")) if auc is not None else "[dim]not evaluable[/]",
            f"{m.get('n_pos', 0)}/{m.get('n_neg', 0)}",
            _num(m.get("threshold", metrics.get("threshold"))),
            _with_ci(m.get("sensitivity"), m.get("sensitivity_ci")),
            _with_ci(m.get("specificity"), m.get("specificity_ci")),
        )
    table.add_section()
    table.add_row(
        "[bold]macro AUC[/]",
        f"[bold]{_with_ci(metrics.get('macro_auc'), metrics.get('macro_auc_ci'))}[/]",
        f"{len(metrics.get('labels_evaluated', []))} evaluated",
    )
    table.add_row("micro AUC", _num(metrics.get("micro_auc")))
    cal = metrics.get("calibration")
    if cal and cal.get("ece_before") is not None:
        table.add_row("ECE raw → calibrated", f"{_num(cal.get('ece_before'))} → {_num(cal.get('ece_after'))}")
    elif metrics.get("ece") is not None:
        table.add_row("ECE", _num(metrics.get("ece")))
    return table


def print_metrics(console: Console, metrics: dict, title: str = "Held-out metrics") -> None:
    console.print(metrics_table(metrics, title))
    cov = metrics.get("roi_localization")
    if cov:
        console.print(localization_table(cov))


def localization_table(cov: dict) -> Table:
    """The MXA boxes (last block) against the ground-truth finding boxes, beside the two chance
    baselines on the same boxes: the untrained ROI predictor's box and a same-size box at a
    random position; with the model's paired gain over each."""
    n_images = f", {cov['n_images']} images" if cov.get("n_images") else ""
    table = Table(
        title=f"MXA ROI vs ground-truth finding boxes ({cov['n']} boxes{n_images})",
        title_justify="left",
        caption="(95% bootstrap CIs over images; gain = model minus baseline, paired)",
    )
    metrics = (("hit_rate", "hit rate"), ("mean_coverage", "coverage"), ("mean_iou", "IoU"))
    table.add_column("box")
    for _, label in metrics:
        table.add_column(label, justify="right")
    table.add_row("MXA (trained)", *(_with_ci(cov.get(k), cov.get(f"{k}_ci")) for k, _ in metrics))
    names = {"init_box": ("untrained init", "init"), "random_box": ("random position", "random")}
    for key, (name, short) in names.items():
        base = (cov.get("baselines") or {}).get(key)
        if base is None:
            continue
        if "unavailable" in base:
            table.add_row(name, f"[dim]unavailable: {base['unavailable']}[/]")
            continue
        table.add_row(name, *(_with_ci(base.get(k), base.get(f"{k}_ci")) for k, _ in metrics))
        gain = base.get("model_minus_this") or {}
        table.add_row(
            f"  gain vs {short}",
            *(_delta(gain.get(k, {}).get("delta"), gain.get(k, {}).get("ci"), False) for k, _ in metrics),
        )
    return table


def _delta(value, ci, failed: bool) -> str:
    if value is None:
        return "—"
    text = f"{value:+.3f}" + (f" ({ci[0]:+.3f}…{ci[1]:+.3f})" if ci else "")
    return f"[red]{text}[/]" if failed else text


def drift_table(d: dict, title: str) -> Table:
    """Gate v2's table: per finding the AUC change and the sensitivity / specificity change at
    its threshold and the decision agreement, each with its paired CI; red where the gate's own
    rule (``mxa_edge.decision.gate.checks``) fails it."""
    from mxa_edge.decision.gate import GateSpec, checks

    spec = GateSpec.from_dict(d.get("gate") or {})
    failed = {(c.scope, c.metric) for c in checks(d, spec) if c.failed}
    table = Table(title=title, title_justify="left")
    for col in ("Finding", "AUC FP32→exported", "Δ AUC (95% CI)", "Δ sensitivity", "Δ specificity", "agreement", ""):
        table.add_column(col, justify="left" if col == "Finding" else "right")
    for name, v in d["per_label"].items():
        if v.get("delta") is None and v.get("sensitivity_delta") is None:
            table.add_row(name, "[dim]not evaluable[/]", "", "", "", "", "")
            continue
        bad = {m for (scope, m) in failed if scope == name}
        agree = v.get("agreement_at_threshold")
        table.add_row(
            name,
            f"{v['auc_ref']:.3f}→{v['auc_new']:.3f}" if v.get("auc_ref") is not None else "—",
            _delta(v.get("delta"), v.get("delta_ci"), "AUC" in bad),
            _delta(v.get("sensitivity_delta"), v.get("sensitivity_delta_ci"), "sensitivity" in bad),
            _delta(v.get("specificity_delta"), v.get("specificity_delta_ci"), "specificity" in bad),
            (f"[red]{agree:.3f}[/]" if "agreement" in bad else f"{agree:.3f}") if agree is not None else "—",
            "[red]DRIFT[/]" if bad else "",
        )
    table.add_section()
    md = d.get("macro_delta")
    table.add_row(
        "[bold]macro[/]",
        f"{_num(d.get('macro_auc_ref'))}→{_num(d.get('macro_auc_new'))}",
        _delta(md, d.get("macro_delta_ci"), ("macro", "AUC") in failed),
        "",
        "",
        _num(d.get("agreement_at_threshold")),
        "",
    )
    if d.get("ece_delta") is not None:
        table.add_row(
            "ECE",
            f"{_num(d.get('ece_ref'))}→{_num(d.get('ece_new'))}",
            _delta(d.get("ece_delta"), d.get("ece_delta_ci"), ("all findings", "ECE") in failed),
            "",
            "",
            "",
            "",
        )
    return table
