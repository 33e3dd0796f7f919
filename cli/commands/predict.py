"""``mxa-edge predict``."""

from __future__ import annotations

import typer


def predict():
    """Predict the 14 findings on images with an exported artifact, offline, without PyTorch."""
    from mxa_edge.errors import MxaError

    raise MxaError("predict is not available in this build yet")
