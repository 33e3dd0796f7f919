"""``mxa-edge report``."""

from __future__ import annotations

import typer


def report():
    """Write one self-contained HTML validation report for an exported model."""
    from mxa_edge.errors import MxaError

    raise MxaError("report is not available in this build yet")
