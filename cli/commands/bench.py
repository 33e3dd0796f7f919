"""``mxa-edge bench``."""

from __future__ import annotations

import typer


def bench():
    """Benchmark FLOPs, size and latency of a run and its exported artifacts across backends."""
    from mxa_edge.errors import MxaError

    raise MxaError("bench is not available in this build yet")
