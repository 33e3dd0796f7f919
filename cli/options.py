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


def optional_path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None
