"""Make a trained student export-ready: fuse Conv+BN / BN+Linear, wrap ``forward_aux``
into named tensor outputs, count FLOPs. Torch only; called by every backend's export."""

from __future__ import annotations

import copy

import torch
from torch import nn

# Fused vs unfused logits must agree to this (max abs): fusion only re-associates float sums.
FUSE_TOLERANCE = 1e-4


def fuse_model(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A fused deep copy of ``model`` in eval mode: timm ``ConvNorm`` -> Conv2d, ``NormLinear``
    -> Linear. When ``example`` is given, checks fused == unfused logits.

    EfficientViT caches its attention biases when switched to eval mode, so the copy is
    switched to eval AFTER the swap (the cache then belongs to the fused module tree).
    """
    from timm.models.efficientvit_msra import ConvNorm, NormLinear

    fused = copy.deepcopy(model).eval()

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, (ConvNorm, NormLinear)):
                setattr(parent, name, child.fuse())
            else:
                swap(child)

    with torch.no_grad():
        swap(fused)
    fused.train()
    fused.eval()
    if example is not None:
        with torch.no_grad():
            ref = model.eval()(example)
            got = fused(example)
        diff = float((ref - got).abs().max())
        if diff > FUSE_TOLERANCE:
            raise RuntimeError(f"Conv+BN fusion changed the logits by {diff:.2e} (> {FUSE_TOLERANCE}); not exporting")
    return fused


def export_output_names(has_mxa: bool) -> list[str]:
    """The exported graph's outputs, in order: logits, the MXA boxes and map (with MXA), and the
    pooled ``features`` the artifact's input guard scores (``mxa_edge.decision.guard``)."""
    return ["logits"] + (["roi", "attention", "attention_box"] if has_mxa else []) + ["features"]


class AuxOutputs(nn.Module):
    """Exposes ``forward_aux`` as a tuple in a fixed order, so ONNX outputs have names."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_names = export_output_names(bool(model.mxa_blocks))

    def forward(self, image: torch.Tensor):
        out = self.model.forward_aux(image)
        return tuple(out[k] for k in self.output_names)


def count_flops(model: nn.Module, image_size: int) -> dict:
    """FLOPs of one forward at batch 1, by ``torch.utils.flop_counter.FlopCounterMode``.

    What is counted: matmul/linear/conv (incl. depthwise and grouped) and batched matmuls,
    with a multiply-add = 2 FLOPs; elementwise ops, softmax, pooling, grid_sample and
    normalisation are not counted (they are memory-bound and small here). ``macs`` = flops / 2.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(x)
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2, "params": int(sum(p.numel() for p in model.parameters()))}
