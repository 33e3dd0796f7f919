"""Option definitions shared by several commands (one place for names and help)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout (progress stays on stderr).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
DataOpt = typer.Option(
    None,
    "--data",
    "-d",
    help="CheXpert-layout dataset root (holds train.csv / valid.csv). Default: the embedded phantom dataset.",
)
SeedOpt = typer.Option(0, "--seed", help="Random seed (data order, augmentation, initialisation).")
AllowRejectedOpt = typer.Option(
    False,
    "--allow-rejected",
    help="Load an artifact whose drift gate did NOT pass (or that records no verdict), to investigate it. "
    "Refused without this. Every result then says REJECTED and the JSON records it; never for patient use.",
)
TrustOpt = typer.Option(
    None,
    "--trust",
    help="Public key (PEM, from `mxa-edge keys`) whose signature this site accepts; repeat for several. The "
    "artifact must then be signed by one of them (`mxa-edge sign`) and unchanged since. Default: $MXA_EDGE_TRUST "
    "(key paths separated by ':'). With no key configured nothing is checked and outputs say unsigned.",
    show_default=False,
)


def optional_path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None
