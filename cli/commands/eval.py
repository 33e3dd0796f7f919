"""``mxa-edge eval``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge_cli.options import AllowRejectedOpt, JsonOpt, QuietOpt, SeedOpt, TrustOpt
from mxa_edge_cli.output import Output
from mxa_edge_cli.render import print_metrics


def eval_(
    model: Path = typer.Argument(..., help="A run folder from `mxa-edge train` or an exported artifact folder."),
    data: Optional[Path] = typer.Option(
        None, "--data", "-d", help="CheXpert-layout root. Default: the data the model was trained on."
    ),
    split: str = typer.Option(
        "valid",
        "--split",
        help="valid (held out: the default, the only split whose numbers are results), tune (the split that "
        "selected the epoch and fitted calibration and thresholds), train, or a path to a CheXpert-layout CSV.",
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples for the 95% CIs (0: none)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N images."),
    seed: int = SeedOpt,
    trust: Optional[List[Path]] = TrustOpt,
    allow_rejected: bool = AllowRejectedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Per-pathology AUC with 95% bootstrap CIs, and sensitivity/specificity at the model's operating points.

    Probabilities are calibrated and decisions made exactly as `predict` does (the run's or artifact's
    decision rule); ECE is shown for both the raw and the calibrated probabilities.

    Findings with one class in the split are reported as not evaluable (null in --json).
    On phantom data, also how well the MXA ROI boxes cover the ground-truth finding boxes.
    """
    from mxa_edge.decision.evaluation import evaluate_model

    o = Output(json_out, quiet)
    metrics = evaluate_model(
        model,
        data,
        split,
        n_boot=n_boot,
        seed=seed,
        limit=limit,
        reporter=o.reporter(),
        allow_rejected=allow_rejected,
        trust=trust,
    )
    if metrics.get("warning"):
        o.warn(metrics["warning"])
    art = metrics.get("artifact")
    if art and art["allow_rejected"]:
        o.err.print(f"WARNING: {model}: {art['gate']}", style="bold red", soft_wrap=True, markup=False)
    if art:
        o.info(f"signature: {art['signature']['status']}")
    o.result(
        metrics,
        lambda c: print_metrics(c, metrics, f"{model} on {metrics['data']} ({split}, {metrics['n_images']} images)"),
    )
