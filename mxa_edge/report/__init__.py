"""One self-contained HTML sign-off page per exported model (``mxa-edge report``).

    from mxa_edge.report import build_report

    path = build_report("runs/m0/exports/onnx-int8", bench="bench.json", out="m0-int8.html")

The page is generated from the artifact's own records (manifest.json, drift.json) where they
exist and computed where they do not (ROC curves, calibration, the overlay gallery), on the
validation split of the source run's dataset (or ``data``). It needs nothing but a browser to
open: CSS inline, figures as base64 PNG data URIs, no scripts, fonts or links.

Light at import: matplotlib, torch and the runtime engines load only inside ``build_report``.
"""

from mxa_edge.report.builder import build_report

__all__ = ["build_report"]
