"""``mxa-edge report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mxa_edge_cli.options import JsonOpt, QuietOpt, SeedOpt
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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write. Default: ARTIFACT/report.html."),
    gallery: int = typer.Option(
        6, "--gallery", min=0, help="Validation images in the ROI/attention overlay gallery (0: none)."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples for the per-model AUC CIs."),
    seed: int = SeedOpt,
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
        artifact, data=data, bench=bench, out=out, gallery=gallery, n_boot=n_boot, seed=seed, progress=o.info
    )
    o.result(
        {"report": str(path), "bytes": path.stat().st_size},
        lambda c: c.print(
            f"report: [bold]{path}[/] ({path.stat().st_size / 1e6:.1f} MB)\nopen it in any browser: file://{path.absolute()}"
        ),
    )
