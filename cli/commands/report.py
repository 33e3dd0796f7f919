"""``mxa-edge report``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge.support.outputs import FORCE_HELP
from mxa_edge_cli.options import AllowRejectedOpt, JsonOpt, QuietOpt, SeedOpt, TrustOpt
from mxa_edge_cli.output import Output


def report(
    artifact: Path = typer.Argument(..., help="An exported artifact folder from `mxa-edge export`."),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        "-d",
        help="CheXpert-layout root for the ROC, calibration and gallery images. Default: the source run's data.",
    ),
    bench: Optional[Path] = typer.Option(None, "--bench", help="A `mxa-edge bench --json` file to include (optional)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="HTML file to write, outside the artifact (nothing is written into one). Default: "
        "<artifact folder name>.report.html in the current folder.",
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    gallery: int = typer.Option(
        6, "--gallery", min=0, help="Validation images in the ROI/attention overlay gallery (0: none)."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples for the per-model AUC CIs."),
    seed: int = SeedOpt,
    trust: Optional[List[Path]] = TrustOpt,
    allow_rejected: bool = AllowRejectedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Write one self-contained HTML validation report for an exported model, for sign-off.

    Identity and hashes, per-pathology FP32 vs exported AUC with CIs and the drift verdict, ROC
    curves per finding, calibration, the benchmark (with --bench), ROI/attention overlays and the
    export settings. Inline CSS, embedded PNGs, no scripts or links: it opens from a USB stick.
    """
    from mxa_edge.report import build_report

    o = Output(json_out, quiet)
    path = build_report(
        artifact,
        data=data,
        bench=bench,
        out=out,
        gallery=gallery,
        n_boot=n_boot,
        seed=seed,
        force=force,
        progress=o.info,
        allow_rejected=allow_rejected,
        trust=trust,
    )
    if allow_rejected:
        o.warn("--allow-rejected: a rejected artifact's report says REJECTED at the top")
    o.result(
        {"report": str(path), "bytes": path.stat().st_size, "allow_rejected": allow_rejected},
        lambda c: c.print(
            f"report: [bold]{path}[/] ({path.stat().st_size / 1e6:.1f} MB)\nopen it in any browser: file://{path.absolute()}"
        ),
    )
