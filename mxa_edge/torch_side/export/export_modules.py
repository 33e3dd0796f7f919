"""Export-only equivalents of timm's window attention and of the MXA block: the same function
as the fused eval-mode modules, traced into fewer, larger ONNX ops.

Why: the legacy exporter turns every ``view(B, ...)``/``flatten``/``chunk`` on a tensor with
a dynamic batch into a Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain. On M5/224
that was ~90 shape ops per attention block (~1,100 of the graph's 2,516 nodes) and ~100 ops
per MXA block, each a kernel launch that ONNX Runtime pays on every call. Here the spatial
sizes are Python ints fixed at export (the run's image size), the batch is ``-1`` in every
reshape (so the batch axis stays dynamic without any shape arithmetic), the attention biases
are gathered once, and the query scale is folded into the query's depthwise conv.

``export_equivalent(model)`` returns a copy with every ``LocalWindowAttention`` and every
``MXABlock`` swapped; ``ATTENTION_TOLERANCE`` is what the tests hold each swap to.
Training never sees these modules.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mxa_edge.torch_side.models.mxa import ExportMXABlock, MXABlock

# Max |export-only - timm| on a module's output (float32, unit-scale inputs).
ATTENTION_TOLERANCE = 1e-5


class ExportCascadedGroupAttention(nn.Module):
    """timm's ``CascadedGroupAttention`` (eval, fused) on windows of a fixed ``resolution``."""

    def __init__(self, attn):
        super().__init__()
        self.num_heads = attn.num_heads
        self.key_dim, self.val_dim = attn.key_dim, attn.val_dim
        self.resolution = attn.resolution
        self.qkvs = attn.qkvs
        self.proj = attn.proj
        first = attn.qkvs[0]
        self.head_channels = int(first.in_channels if hasattr(first, "in_channels") else first.conv.in_channels)
        # q * scale folded into the query's depthwise conv: q' = (W q + b) * scale (on a
        # fused copy: an unfused timm ConvNorm is fused here first).
        self.dws = nn.ModuleList(dw.fuse() if hasattr(dw, "fuse") else copy.deepcopy(dw) for dw in attn.dws)
        with torch.no_grad():
            for dw in self.dws:
                dw.weight.mul_(attn.scale)
                if dw.bias is not None:
                    dw.bias.mul_(attn.scale)
            # One (heads, N, N) constant instead of a Gather per call.
            biases = attn.attention_biases[:, attn.attention_bias_idxs].detach().clone()
        self.register_buffer("attention_bias", biases, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, n = self.resolution, self.resolution * self.resolution
        kd, vd = self.key_dim, self.val_dim
        # split with constant sizes: chunk() traces into Shape -> Gather -> Div -> Split.
        feats_in = x.split(self.head_channels, dim=1)
        feats_out = []
        feat = feats_in[0]
        for head, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if head > 0:
                feat = feat + feats_in[head]
            q, k, v = qkv(feat).split([kd, kd, vd], dim=1)
            q = dw(q).reshape(-1, kd, n)
            attn = torch.matmul(q.transpose(1, 2), k.reshape(-1, kd, n)) + self.attention_bias[head]
            attn = attn.softmax(dim=-1)
            feat = torch.matmul(v.reshape(-1, vd, n), attn.transpose(1, 2)).reshape(-1, vd, r, r)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, 1))


class ExportLocalWindowAttention(nn.Module):
    """timm's ``LocalWindowAttention`` on a feature map of a fixed ``resolution``: the window
    partition and its reverse are one Reshape -> Transpose -> Reshape each."""

    def __init__(self, module):
        super().__init__()
        self.attn = ExportCascadedGroupAttention(module.attn)
        self.resolution = module.resolution
        self.window = module.attn.resolution  # min(window_resolution, resolution), as timm sets it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res, ws = self.resolution, self.window
        # (Checked in eager runs only: under the exporter's trace, shapes are tensors.)
        if not torch.jit.is_tracing() and (x.shape[2] != res or x.shape[3] != res):
            raise ValueError(f"export-only attention built for {res}x{res} maps, got {tuple(x.shape[2:])}")
        if res == ws:
            return self.attn(x)
        c = x.shape[1]
        pad = (ws - res % ws) % ws
        if pad:  # timm pads the bottom and right edges with zeros before partitioning
            x = nn.functional.pad(x, (0, pad, 0, pad))
        p = res + pad
        nw = p // ws
        # (B, C, nH*ws, nW*ws) -> (B*nH*nW, C, ws, ws), windows in timm's (B, nH, nW) order.
        x = x.reshape(-1, c, nw, ws, nw, ws).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, ws, ws)
        x = self.attn(x)
        x = x.reshape(-1, nw, nw, c, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(-1, c, p, p)
        if pad:
            x = x[:, :, :res, :res]
        return x


def export_equivalent(model: nn.Module) -> nn.Module:
    """A deep copy of a fused, eval-mode student with every ``LocalWindowAttention`` and
    ``MXABlock`` replaced by its export-only equivalent, at the map sizes the model was built
    for (timm's ``resolution``, from the run's image size); the batch stays free."""
    from timm.models.efficientvit_msra import LocalWindowAttention

    out = copy.deepcopy(model).eval()
    # Each MXA block sees its stage's map, the same size as the attention beside it.
    sizes: dict[int, int] = {}
    for module in out.modules():
        if isinstance(module, LocalWindowAttention):
            sizes[module.dim] = module.resolution
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LocalWindowAttention):
                setattr(parent, name, ExportLocalWindowAttention(child))
            elif isinstance(child, MXABlock) and child.fusion == "zoom":  # ExportMXABlock only zooms
                channels = child.channel.fc1.in_channels
                res = sizes.get(channels)
                if res is None:
                    raise ValueError(f"no attention of {channels} channels to take the MXA map size from")
                setattr(parent, name, ExportMXABlock(child, res, res))
    # MultiLabelStudent.forward_aux reads the blocks it captured from this list.
    if hasattr(out, "mxa_blocks"):
        out.mxa_blocks = [m for m in out.modules() if isinstance(m, (ExportMXABlock, MXABlock))]
    return out.eval()
