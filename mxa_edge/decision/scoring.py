"""One batched scoring loop for every model the toolkit scores: a runtime engine or a PyTorch model.

``score(run_batch, images)`` cuts ``images`` into batches, runs each through ``run_batch``
(a function batch -> {output name: array}) and concatenates every requested output over the
batches. Adapters make the function: ``engine_runner`` for the runtime engines (their
``.run``); a PyTorch model's is ``torch_side.model_runner`` (the torch side's, through the one
door from the core).

Used by training's validation scoring, ``mxa-edge eval``, the drift gate and the report.
torch-free at import: the runtime path may import it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mxa_edge.decision.metrics import sigmoid

RunBatch = Callable[[np.ndarray], dict]


def score(
    run_batch: RunBatch,
    images,
    *,
    batch: int = 32,
    to_input: Callable[[slice], np.ndarray] | None = None,
    outputs: Sequence[str] = ("logits",),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``images`` through ``run_batch`` ``batch`` rows at a time.

    ``images``: anything with ``len`` (an array, a SplitArrays). ``to_input(rows: slice)``
    builds the model input for those rows (default: ``images[rows]``). Returns
    {name: outputs concatenated over the batches} for each name in ``outputs`` the model
    gives (one it does not give, like "roi" without MXA, is absent; so is everything when
    there are no images). ``progress(done, total)`` after each batch.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    n = len(images)
    take = to_input if to_input is not None else (lambda rows: images[rows])
    parts: dict[str, list] = {name: [] for name in outputs}
    for i in range(0, n, batch):
        out = run_batch(take(slice(i, i + batch)))
        for name in outputs:
            if name in out:
                parts[name].append(np.asarray(out[name]))
        if progress is not None:
            progress(min(i + batch, n), n)
    return {name: np.concatenate(p) for name, p in parts.items() if p}


def engine_runner(engine) -> RunBatch:
    """``run_batch`` for a runtime engine (``engine.run(batch) -> {name: array}``)."""
    return engine.run


def probabilities(logits) -> np.ndarray:
    """Logits -> float64 probabilities (``metrics.sigmoid``)."""
    return sigmoid(logits)


__all__ = ["RunBatch", "engine_runner", "probabilities", "score"]
