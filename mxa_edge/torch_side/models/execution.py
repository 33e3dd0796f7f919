"""Running PyTorch models for the core (torch side): the scoring adapter and bench's timed call.

The torch-free core reaches these only through ``mxa_edge.torch_side``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from mxa_edge.decision.scoring import RunBatch


def torch_runner(
    model,
    *,
    device=None,
    prepare: Callable | None = None,
    aux: bool | None = None,
) -> RunBatch:
    """``run_batch`` for a PyTorch model, under ``torch.no_grad()``; the model's mode is left as is.

    Each numpy batch becomes a tensor on ``device`` (default: left where ``from_numpy``
    puts it, the CPU), then ``prepare(tensor)`` if given (e.g. uint8 -> model range, on the
    device). ``aux``: call ``model.forward_aux`` (logits and the MXA outputs); None: when the
    model has it. Otherwise ``model(x)`` is the logits. Outputs come back as float32 numpy
    arrays on the CPU.
    """
    use_aux = hasattr(model, "forward_aux") if aux is None else bool(aux)

    def run(x: np.ndarray) -> dict:
        with torch.no_grad():
            t = torch.from_numpy(x)
            if device is not None:
                t = t.to(device)
            if prepare is not None:
                t = prepare(t)
            out = model.forward_aux(t) if use_aux else {"logits": model(t)}
        return {name: v.detach().float().cpu().numpy() for name, v in out.items()}

    return run


def model_bind(model, device: str = "cpu", autocast: str | None = None):
    """bench's ``bind(x) -> run()`` for a PyTorch model: the input moved to ``device`` once,
    each ``run()`` one forward pass under ``inference_mode`` (and ``autocast`` dtype, e.g.
    "bfloat16"), synchronized on CUDA so the timer sees the whole pass."""

    def bind(x: np.ndarray):
        t = torch.from_numpy(x).to(device)

        def run():
            with torch.inference_mode():
                if autocast:
                    with torch.autocast(device, dtype=getattr(torch, autocast)):
                        out = model(t)
                else:
                    out = model(t)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    return bind


def gemm(n: int, dtype: str = "float32"):
    """A callable running one n x n ``torch.mm`` in ``dtype`` (bench's compute-bound probe);
    the operands are made once, seeded."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(getattr(torch, dtype))
    b = torch.randn(n, n, generator=g).to(getattr(torch, dtype))
    return lambda: torch.mm(a, b)
