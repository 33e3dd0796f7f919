"""Export a training run to ONNX Runtime / OpenVINO / TensorRT artifacts, drift-gated.

Light at import (no torch): ``export_run`` and friends load lazily, so the runtime side can
import ``mxa_edge.export._telemetry`` without the [train] extra.
"""

from mxa_edge.export.base import CAPABILITIES, Backend, Capability, ExportOptions, get_backend


def export_run(*args, **kwargs):
    from mxa_edge.export.pipeline import export_run as _export_run

    return _export_run(*args, **kwargs)


export_run.__doc__ = "See mxa_edge.export.pipeline.export_run."

__all__ = ["CAPABILITIES", "Backend", "Capability", "ExportOptions", "export_run", "get_backend"]
