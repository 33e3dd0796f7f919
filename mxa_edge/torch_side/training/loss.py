"""Ground-truth BCE plus the paper's soft, dynamically weighted distillation term.

L = (1 - alpha) * BCE(o, y) + alpha * (1/C) * sum_j w_j * BCE(o_j / tau, p_t_j) * tau^2,
p_t = sigmoid(z_t / tau),  w_j = 1 - mean_batch(p_t_j)  (paper section 3.3, appendix E).

- The ground-truth term averages over unmasked cells only (U-ignore and masked blanks are
  excluded). The KD term covers every image: the teacher's soft label is exactly what an
  uncertain or unmentioned cell lacks.
- Labels without a teacher counterpart carry KD weight 0 (``kd_mask``).
- The weights w_j are computed from the teacher and detached: they scale the loss, they are
  not something to optimise.
- tau^2 keeps the KD gradient scale independent of the temperature (Hinton et al.); at the
  paper's tau = 1 it is 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mxa_edge.torch_side.training.distributed import all_reduce_mean, all_reduce_sum, world_size


class DistillationLoss(nn.Module):
    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, pos_weight: torch.Tensor | None = None):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.alpha = alpha
        self.temperature = temperature
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None, persistent=False)

    def supervised(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:

        cell = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight, reduction="none")
        # Under DDP: normalise by the GLOBAL count of unmasked cells, times the world size
        # because DDP averages gradients over ranks; equals the single-process loss.
        count = all_reduce_sum(mask.sum()).clamp(min=1.0)
        return (cell * mask).sum() / count * world_size()

    def distillation(self, logits: torch.Tensor, teacher_logits: torch.Tensor, kd_mask: torch.Tensor) -> torch.Tensor:

        tau = self.temperature
        p_t = torch.sigmoid(teacher_logits.detach() / tau)
        # w_j from the global batch (ranks hold equal shares, so the mean of means is exact).
        w = (1.0 - all_reduce_mean(p_t.mean(dim=0))).detach() * kd_mask  # (C,)
        per_label = F.binary_cross_entropy_with_logits(logits / tau, p_t, reduction="none").mean(dim=0)
        return (w * per_label).sum() / logits.shape[1] * tau * tau

    def forward(self, logits, targets, mask, teacher_logits=None, kd_mask=None) -> dict[str, torch.Tensor]:
        sup = self.supervised(logits, targets, mask)
        if teacher_logits is None or self.alpha == 0.0:
            return {"loss": sup, "bce": sup.detach(), "kd": torch.zeros((), device=logits.device)}
        if kd_mask is None:
            kd_mask = torch.ones(logits.shape[1], device=logits.device)
        kd = self.distillation(logits, teacher_logits, kd_mask)
        return {"loss": (1.0 - self.alpha) * sup + self.alpha * kd, "bce": sup.detach(), "kd": kd.detach()}


def class_balanced_pos_weight(targets: torch.Tensor, mask: torch.Tensor, cap: float = 10.0) -> torch.Tensor:
    """neg/pos per label over the training set, capped so rare labels do not dominate."""
    pos = (targets * mask).sum(0)
    neg = ((1 - targets) * mask).sum(0)
    return (neg / pos.clamp(min=1.0)).clamp(min=1.0, max=cap)
