"""The Medical X-ray Attention (MXA) block: dynamic ROI pooling + CBAM-style attention.

Paper section 3.2 and appendices C-D. Given a feature map F (B, C, H, W):

1. a light conv ROI predictor gives one normalized box [x1, y1, x2, y2] per image;
2. the box is cropped from F and resized back to H x W with bilinear sampling
   (``grid_sample`` on a grid built from the box), so the classification loss
   back-propagates into the box coordinates (integer slicing would cut that gradient);
3. CBAM refines the pooled map: channel attention from GAP and GMP through a shared MLP,
   then spatial attention from the channel-wise max and mean through a conv.

The block's output is summed with the attention's output inside one residual:
x + attn(x) + mxa(x) (``AttentionWithMXA``). There is deliberately no zero-initialised
output scale: it would give the ROI predictor exactly zero gradient at the start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.efficientvit_msra import ConvNorm
from torch import nn

from mxa_edge.models.configs import MXAConfig


class RoiPredictor(nn.Module):
    """Light conv net: feature map -> one always-valid normalized box per image.

    The box is parametrised by size and offset through sigmoids, so for any weights
    0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, with each side at least ``min_size``.
    """

    def __init__(self, channels: int, hidden: int = 16, min_size: float = 0.25):
        super().__init__()
        if not 0.0 < min_size < 1.0:
            raise ValueError(f"min_size must be in (0, 1), got {min_size}")
        self.min_size = min_size
        self.dw = ConvNorm(channels, channels, 3, 1, 1, groups=channels)
        self.pw = ConvNorm(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2 * hidden, 4)
        # Small random weights (not zero: a zero layer would block gradients to the convs
        # before it on the first step) and a bias giving a centred box of side ~0.63.
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.pw(self.act(self.dw(x))))
        # Mean and max pooling: max keeps small bright or dark findings visible to the predictor.
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        t = self.fc(pooled)
        size = self.min_size + (1.0 - self.min_size) * torch.sigmoid(t[:, 2:4])  # (w, h)
        offset = (1.0 - size) * torch.sigmoid(t[:, 0:2])  # (x1, y1) keeps the box inside
        return torch.cat([offset, offset + size], dim=1)  # (B, 4): x1, y1, x2, y2


def roi_align_resize(features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop each normalized box from ``features`` and resize it to the map's own H x W.

    Bilinear sampling at the centres of an H x W grid laid over the box. The grid is
    built by hand from the box (not ``affine_grid``) so the legacy ONNX exporter handles it
    at opset 17; ``grid_sample`` (ONNX GridSample, opset 16) is differentiable in ``boxes``.
    """
    b, _, h, w = features.shape
    # Pixel-centre positions in [0, 1] across the output map.
    ys = (torch.arange(h, dtype=features.dtype, device=features.device) + 0.5) / h
    xs = (torch.arange(w, dtype=features.dtype, device=features.device) + 0.5) / w
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    gx = x1[:, None] + xs[None, :] * (x2 - x1)[:, None]  # (B, W), in [0, 1]
    gy = y1[:, None] + ys[None, :] * (y2 - y1)[:, None]  # (B, H)
    grid = torch.stack([gx[:, None, :].expand(b, h, w), gy[:, :, None].expand(b, h, w)], dim=-1)  # (B, H, W, 2)
    # align_corners=False: -1 and 1 are the outer edges of the map, matching [0, 1] boxes.
    return F.grid_sample(features, grid * 2.0 - 1.0, mode="bilinear", padding_mode="border", align_corners=False)


class ChannelAttention(nn.Module):
    """M_C = sigmoid(W2 relu(W1 GAP(F)) + W2 relu(W1 GMP(F))) (appendix D)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """M_S = sigmoid(conv([max_c F, mean_c F])) (appendix D); also returns M_S."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        desc = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        attn = torch.sigmoid(self.conv(desc))
        return x * attn, attn


class MXABlock(nn.Module):
    """Dynamic ROI pooling followed by CBAM. Records its last box and spatial map when
    ``capture`` is set (for overlays and localization checks; the logits path is unchanged)."""

    def __init__(self, channels: int, cfg: MXAConfig = MXAConfig()):
        super().__init__()
        self.roi = RoiPredictor(channels, cfg.roi_hidden, cfg.min_box_size)
        self.channel = ChannelAttention(channels, cfg.channel_reduction)
        self.spatial = SpatialAttention(cfg.spatial_kernel)
        self.capture = False
        self.last_box: torch.Tensor | None = None
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = self.roi(x)
        pooled = roi_align_resize(x, box)
        out, attn = self.spatial(self.channel(pooled))
        if self.capture:
            self.last_box, self.last_attention = box, attn
        return out


class AttentionWithMXA(nn.Module):
    """x + attn(x) + mxa(x): the attention runs once, MXA beside it, one residual."""

    def __init__(self, attn: nn.Module, mxa: MXABlock):
        super().__init__()
        self.attn = attn
        self.mxa = mxa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x) + self.mxa(x)
