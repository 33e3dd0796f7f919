"""``mxa-edge export`` (wired to mxa_edge.export)."""

from __future__ import annotations

from pathlib import Path

import typer


def export(run: Path = typer.Argument(..., help="Run folder from `mxa-edge train`.")):
    """Quantize and export a run to ONNX, OpenVINO or TensorRT behind a per-pathology AUC-drift gate."""
    from mxa_edge.errors import MxaError

    raise MxaError("export is not available in this build yet")
