"""Export a training run to the registered targets (``mxa_edge.backends``), drift-gated.

Light at import (no torch): ``export_run`` loads the pipeline lazily.
"""

from mxa_edge.torch_side.export.pipeline import export_run as _export_run


def export_run(*args, **kwargs):

    return _export_run(*args, **kwargs)


export_run.__doc__ = "See mxa_edge.torch_side.export.pipeline.export_run."

__all__ = ["export_run"]
