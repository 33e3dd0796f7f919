"""Inference engines over a verified artifact (no torch): whichever backend the manifest names.

``open_engine(artifact)`` looks the artifact's runtime up in the backend registry
(``mxa_edge.backends``). Every engine takes a float32 batch (B, 1, S, S) in the preprocess range
and returns {output name: array}: ``logits`` plus ``roi``/``attention``/``attention_box`` when
the model has MXA.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.backends import Engine, for_runtime

_DEFAULT = object()

__all__ = ["Engine", "open_engine", "open_model_file"]


def open_engine(artifact, threads: int | None = None, *, precision=_DEFAULT) -> Engine:
    """An engine for a loaded artifact (``mxa_edge.formats.load_artifact``).

    The engine compiles with the manifest's ``precision.inference_precision`` unless
    ``precision`` overrides it (None = the runtime's default; bench uses this).
    """
    spec = for_runtime(artifact.runtime)
    hint = artifact.precision.inference_precision if precision is _DEFAULT else precision
    return spec.open_engine(artifact.entry, precision=hint, threads=threads, cache=True)


def open_model_file(path, runtime: str, threads: int | None = None, precision: str | None = "f32") -> Engine:
    """An engine over a bare model file (the drift gate, before the manifest exists). No compile
    cache: these files live in temporary folders and are opened once."""
    return for_runtime(runtime).open_engine(Path(path), precision=precision, threads=threads, cache=False)
