"""Export a training run to the registered targets (``mxa_edge.backends``), drift-gated.

Light at import (no torch): ``export_run`` loads the pipeline when called; the options'
defaults are ``settings.ExportConfig`` (what the CLI reads).
"""


def export_run(*args, **kwargs):
    """See mxa_edge.torch_side.export.pipeline.export_run."""
    from mxa_edge.torch_side.export.pipeline import export_run as run

    return run(*args, **kwargs)


__all__ = ["export_run"]
