"""The Medical X-ray Attention (MXA) block: dynamic ROI pooling + CBAM-style attention.

Paper section 3.2 and appendices C-D. Given a feature map F (B, C, H, W):

1. a light conv ROI predictor gives one normalized box [x1, y1, x2, y2] per image;
2. the box is cropped from F and resized back to H x W with bilinear sampling
   (``grid_sample`` on a grid built from the box), so the classification loss
   back-propagates into the box coordinates (integer slicing would cut that gradient);
3. CBAM refines the pooled map: channel attention from GAP and GMP through a shared MLP,
   then spatial attention from the channel-wise max and mean through a conv.

4. fusion (``MXAConfig.fusion``): "zoom" (the paper's, the default) returns the refined map
   in the ROI's zoomed frame, so ROI position (i, j) lands on image position (i, j); "paste"
   samples it back into the box's own positions of the full map (``roi_paste``, the crop's
   inverse, zeros outside the box).

The block's output is summed with the attention's output inside one residual:
x + attn(x) + mxa(x) (``AttentionWithMXA``). There is deliberately no zero-initialised
output scale: it would give the ROI predictor exactly zero gradient at the start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.efficientvit_msra import ConvNorm
from torch import nn

from mxa_edge.formats.model_spec import MXAConfig


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


def roi_paste(roi_features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The inverse of ``roi_align_resize``: put each map back over its normalized box of a map
    of the same H x W, zeros outside the box.

    Full-map pixel centre p (in [0, 1]) reads the ROI map at u = (p - x1) / (x2 - x1), the
    position that ``roi_align_resize`` sampled p from; bilinear with zero padding, so the
    box's edges fade over half an ROI pixel and the output stays differentiable in ``boxes``
    (a hard inside/outside mask would not be). Boxes need a positive size (``RoiPredictor``
    keeps every side at least ``min_size``).
    """
    b, _, h, w = roi_features.shape
    ys = (torch.arange(h, dtype=roi_features.dtype, device=roi_features.device) + 0.5) / h
    xs = (torch.arange(w, dtype=roi_features.dtype, device=roi_features.device) + 0.5) / w
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    gx = (xs[None, :] - x1[:, None]) / (x2 - x1)[:, None]  # (B, W): box frame, [0, 1] inside
    gy = (ys[None, :] - y1[:, None]) / (y2 - y1)[:, None]  # (B, H)
    grid = torch.stack([gx[:, None, :].expand(b, h, w), gy[:, :, None].expand(b, h, w)], dim=-1)
    return F.grid_sample(roi_features, grid * 2.0 - 1.0, mode="bilinear", padding_mode="zeros", align_corners=False)


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
    """Dynamic ROI pooling followed by CBAM, fused back as ``cfg.fusion`` says. Records its
    last box and spatial map when ``capture`` is set (for overlays and localization checks;
    the logits path is unchanged)."""

    def __init__(self, channels: int, cfg: MXAConfig = MXAConfig()):
        super().__init__()
        self.roi = RoiPredictor(channels, cfg.roi_hidden, cfg.min_box_size)
        self.channel = ChannelAttention(channels, cfg.channel_reduction)
        self.spatial = SpatialAttention(cfg.spatial_kernel)
        self.fusion = cfg.fusion
        self.capture = False
        self.last_box: torch.Tensor | None = None
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = self.roi(x)
        pooled = roi_align_resize(x, box)
        out, attn = self.spatial(self.channel(pooled))
        if self.capture:  # the spatial map stays in the box's frame, whatever the fusion
            self.last_box, self.last_attention = box, attn
        return roi_paste(out, box) if self.fusion == "paste" else out


class AttentionWithMXA(nn.Module):
    """x + attn(x) + mxa(x): the attention runs once, MXA beside it, one residual."""

    def __init__(self, attn: nn.Module, mxa: MXABlock):
        super().__init__()
        self.attn = attn
        self.mxa = mxa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x) + self.mxa(x)


# --- Export-time equivalents (never trained; built from a trained, fused block) -------------


class ExportMXABlock(nn.Module):
    """The same function as a fused ``MXABlock`` in eval mode, as fewer, larger graph ops.

    Used only when exporting (``mxa_edge.torch_side.export.export_modules.export_equivalent``); training
    keeps ``MXABlock``. What changes, and why it is the same function:

    - Crop-and-resize: ``grid_sample`` (bilinear, border, align_corners=False) on a grid that
      is axis-aligned in the box is separable: out = R_y @ F @ R_x^T, with R[o, i] =
      relu(1 - |p_o - i|) and p_o the output pixel's source position clamped to [0, S-1]
      (clamping is what border padding does). The positions are affine in the box, so the
      whole grid is one Gemm of the box with a constant matrix. About 25 graph ops instead
      of ~100 (the hand-built grid's Range/Unsqueeze/Expand/Where chain and GridSample).
    - Channel gate: the shared MLP has no bias, so W2 relu(W1 avg) + W2 relu(W1 max) =
      W2 (relu(W1 avg) + relu(W1 max)): both poolings go through W1 as one (B, C, 1, 2)
      conv, and W2 runs once.
    - Spatial gate: conv([max_c, mean_c]) = conv over [x, max_c] whose first C input
      channels carry the mean's kernel / C: the channel mean costs no op of its own.
    Submodule names (``roi``, ``channel``, ``spatial``) are kept so that graph scopes, and
    with them the float-kept nodes, stay what they were.
    """

    def __init__(self, block: MXABlock, height: int, width: int):
        super().__init__()
        self.roi = block.roi
        self.channel = _ExportChannelGate(block.channel)
        self.spatial = _ExportSpatialGate(block.spatial, block.channel.fc2.out_channels)
        self.height, self.width = int(height), int(width)
        h, w = self.height, self.width
        # Source position (in pixels of the input map) of output pixel o along x:
        # (x1 + (o + .5)/W (x2 - x1)) W - .5 = x1 (W - o - .5) + x2 (o + .5) - .5; same along y.
        ox = torch.arange(w, dtype=torch.float32) + 0.5
        oy = torch.arange(h, dtype=torch.float32) + 0.5
        to_pos = torch.zeros(4, w + h)
        to_pos[0, :w], to_pos[2, :w] = w - ox, ox  # x1, x2 -> x positions
        to_pos[1, w:], to_pos[3, w:] = h - oy, oy  # y1, y2 -> y positions
        self.register_buffer("box_to_positions", to_pos, persistent=False)
        # Clamp bounds per position (border padding), and the input pixel indices.
        self.register_buffer("pos_max", torch.cat([torch.full((w,), w - 1.0), torch.full((h,), h - 1.0)]), False)
        self.register_buffer("x_index", torch.arange(w, dtype=torch.float32).view(w, 1), persistent=False)
        self.register_buffer("y_index", torch.arange(h, dtype=torch.float32), persistent=False)
        self.capture = False
        self.last_box: torch.Tensor | None = None
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = self.roi(x)
        w = self.width
        pos = torch.minimum(torch.relu(box @ self.box_to_positions - 0.5), self.pos_max)  # (B, W + H)
        px, py = pos[:, :w], pos[:, w:]
        ry = torch.relu(1.0 - (py.unsqueeze(2) - self.y_index).abs())  # (B, H_out, H_in)
        rx_t = torch.relu(1.0 - (px.unsqueeze(1) - self.x_index).abs())  # (B, W_in, W_out)
        pooled = torch.matmul(torch.matmul(ry.unsqueeze(1), x), rx_t.unsqueeze(1))
        out, attn = self.spatial(self.channel(pooled))
        if self.capture:
            self.last_box, self.last_attention = box, attn
        return out


class _ExportChannelGate(nn.Module):
    def __init__(self, gate: ChannelAttention):
        super().__init__()
        self.fc1, self.fc2, self.act = gate.fc1, gate.fc2, gate.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)], dim=3)  # (B, C, 1, 2)
        hidden = self.act(self.fc1(pooled)).sum(3, keepdim=True)
        return x * torch.sigmoid(self.fc2(hidden))


class _ExportSpatialGate(nn.Module):
    def __init__(self, gate: SpatialAttention, channels: int):
        super().__init__()
        conv = gate.conv
        k = conv.kernel_size
        self.conv = nn.Conv2d(channels + 1, 1, k, padding=conv.padding)
        with torch.no_grad():
            # Input channels: x's C channels carry the mean's kernel / C, the last one max_c.
            self.conv.weight.copy_(
                torch.cat([conv.weight[:, 1:2].expand(1, channels, *k) / channels, conv.weight[:, 0:1]], dim=1)
            )
            self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn = torch.sigmoid(self.conv(torch.cat([x, x.amax(dim=1, keepdim=True)], dim=1)))
        return x * attn, attn
