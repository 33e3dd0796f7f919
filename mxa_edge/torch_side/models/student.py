"""EfficientViT-MultiLabel student (M0-M5), optionally with MXA blocks, built on timm.

timm's ``EfficientVitMsra`` supplies the backbone (cascaded group attention in local
windows); we only set one input channel and a 14-logit head, and wrap the attention of the
chosen blocks with ``AttentionWithMXA``.
"""

from __future__ import annotations

import torch
from timm.models.efficientvit_msra import EfficientVitMsra
from torch import nn

from mxa_edge.formats.model_spec import ModelSpec
from mxa_edge.imaging.preprocess import XRV_RANGE
from mxa_edge.torch_side.models.mxa import AttentionWithMXA, MXABlock


class MultiLabelStudent(nn.Module):
    """Input: (B, 1, S, S) in the preprocessing's value range (TorchXRayVision's [-1024, 1024] by
    default). Output: (B, 14) logits."""

    def __init__(self, spec: ModelSpec, value_range: tuple[float, float] = (-XRV_RANGE, XRV_RANGE)):
        super().__init__()
        self.spec = spec
        lo, hi = (float(v) for v in value_range)
        # The network works on [-1, 1]; the input range stays the preprocessing contract's.
        self.input_center, self.input_scale = (hi + lo) / 2.0, 2.0 / (hi - lo)
        v = spec.variant_config
        self.backbone = EfficientVitMsra(
            img_size=spec.image_size,
            in_chans=1,
            num_classes=spec.num_classes,
            embed_dim=v.embed_dim,
            key_dim=v.key_dim,
            depth=v.depth,
            num_heads=v.num_heads,
            window_size=v.window_size,
            kernels=v.kernels,
        )
        self.mxa_blocks: list[MXABlock] = []
        if spec.mxa is not None:
            for stage, dim in zip(self.backbone.stages, v.embed_dim):
                blocks = list(stage.blocks)
                chosen = blocks if spec.mxa.placement == "block" else blocks[-1:]
                for block in chosen:
                    mxa = MXABlock(dim, spec.mxa)
                    # block.mixer is timm's ResidualDrop(LocalWindowAttention): keep the
                    # attention module itself and put MXA beside it inside one residual.
                    block.mixer = AttentionWithMXA(block.mixer.m, mxa)
                    self.mxa_blocks.append(mxa)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_center:  # a symmetric range (the default) needs no shift: one op fewer in exports
            x = x - self.input_center
        return self.backbone(x * self.input_scale)

    def forward_aux(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits, the pooled stage ``features`` (B, D) the input guard scores, and every MXA
        box (B, K, 4) with the first (finest) MXA's spatial attention map (B, 1, h, w), in the
        frame of its own box ``attention_box`` (B, 4)."""
        # The input guard's features: every stage's output, global-average-pooled (B, sum of stage
        # widths). Early stages carry image statistics (polarity, texture, exposure) that the
        # deepest, finding-tuned stage may discard, so a lateral view or an inverted film stands
        # out there. Taken by forward hooks so the logits run through ``forward`` itself: NNCF's
        # QAT wrapper hooks the model's forward, and what is exported must be that same path.
        pooled: list[torch.Tensor] = []
        hooks = [
            stage.register_forward_hook(lambda _m, _i, out: pooled.append(out.mean(dim=(2, 3))))
            for stage in self.backbone.stages
        ]
        for m in self.mxa_blocks:
            m.capture = True
        try:
            logits = self.forward(x)
        finally:
            for m in self.mxa_blocks:
                m.capture = False
            for h in hooks:
                h.remove()
        out = {"logits": logits, "features": torch.cat(pooled, dim=1)}
        if self.mxa_blocks:
            out["roi"] = torch.stack([m.last_box for m in self.mxa_blocks], dim=1)
            out["attention"] = self.mxa_blocks[0].last_attention
            out["attention_box"] = self.mxa_blocks[0].last_box
        return out


def build_student(spec: ModelSpec, value_range: tuple[float, float] = (-XRV_RANGE, XRV_RANGE)) -> MultiLabelStudent:
    return MultiLabelStudent(spec, value_range)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
