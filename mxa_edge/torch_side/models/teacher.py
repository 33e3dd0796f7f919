"""The frozen DenseNet-121 teacher (TorchXRayVision) and its adapter to the 14 labels.

Two teachers exist:
- ``xrv``: the published ``densenet121-res224-chex`` weights, 18 outputs, loaded from a
  local file (xrv's cache dir or an explicit path), never downloaded. Its outputs map to
  our 14 labels through ``XRV_TO_CHEXPERT`` (only the outputs that model was trained on);
  No Finding = prod(1 - p) over those; Pleural Other and Support Devices have no teacher
  and get zero distillation weight.
- ``finetune``: the same architecture with a 14-label head, fine-tuned on the training
  split (from the xrv weights when given), frozen and cached. Every label has a target.

Either way ``Teacher.forward`` returns logits (B, 14) and a KD weight mask (14,). xrv's
default forward returns op-normalised probabilities when ``op_threshs`` is set; we clear it
and read raw logits, so the sigmoid is applied exactly once, in the loss.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import torch
from torch import nn

from mxa_edge.labels import CHEXPERT_LABELS, NUM_LABELS
from mxa_edge.support.errors import ArtifactError, ConfigError, require

XRV_WEIGHTS_NAME = "densenet121-res224-chex"

# Output order of TorchXRayVision's densenet121-res224-chex ("" = never trained).
XRV_CHEX_OUTPUTS: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "",
    "Pneumothorax",
    "Edema",
    "",
    "",
    "Effusion",
    "Pneumonia",
    "",
    "Cardiomegaly",
    "",
    "",
    "",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)

# xrv name -> CheXpert name where they differ.
_XRV_RENAMES = {"Effusion": "Pleural Effusion"}

# Our label index -> xrv output index, for the labels the xrv model has.
XRV_TO_CHEXPERT: dict[int, int] = {
    CHEXPERT_LABELS.index(_XRV_RENAMES.get(name, name)): i for i, name in enumerate(XRV_CHEX_OUTPUTS) if name
}
NO_FINDING = CHEXPERT_LABELS.index("No Finding")


def adapt_xrv_logits(xrv_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 18) xrv logits -> (B, 14) logits in CheXpert order and the (14,) KD weight mask.

    Labels without a teacher output get logit 0 and mask 0 (no distillation signal).
    No Finding's probability is the product of (1 - p) over the trained outputs.
    """
    b = xrv_logits.shape[0]
    out = xrv_logits.new_zeros(b, NUM_LABELS)
    mask = xrv_logits.new_zeros(NUM_LABELS)
    ours = torch.tensor(list(XRV_TO_CHEXPERT.keys()), device=xrv_logits.device)
    theirs = torch.tensor(list(XRV_TO_CHEXPERT.values()), device=xrv_logits.device)
    out[:, ours] = xrv_logits[:, theirs]
    mask[ours] = 1.0
    # log p_NF = sum log(1 - sigmoid(z)) = sum logsigmoid(-z); stay in log space for stability.
    log_p_nf = nn.functional.logsigmoid(-xrv_logits[:, theirs]).sum(dim=1)
    out[:, NO_FINDING] = log_p_nf - torch.log1p(-torch.exp(log_p_nf).clamp(max=1 - 1e-7))
    mask[NO_FINDING] = 1.0
    return out, mask


def _xrv():

    return require("torchxrayvision")


def _safe_globals_for_xrv() -> list:
    """Classes a published xrv weights file (a pickled DenseNet module) may contain.

    torch's weights_only unpickler rebuilds only these types, so a malicious file cannot
    run code; anything else in the file makes loading fail instead.
    """
    xrv = _xrv()
    return [
        xrv.models.DenseNet,
        xrv.models._DenseLayer,
        xrv.models._DenseBlock,
        xrv.models._Transition,
        nn.Sequential,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.Linear,
        collections.OrderedDict,
        set,
    ]


def load_xrv_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict from a local xrv weights file (.pt pickled module, state dict, or safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"{path}: teacher weights not found; put {XRV_WEIGHTS_NAME} weights there "
            f"(TorchXRayVision's cache dir is ~/.torchxrayvision/models_data/) or use --teacher finetune"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals(_safe_globals_for_xrv()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise ArtifactError(
            f"{path}: not a loadable TorchXRayVision weights file ({str(exc).splitlines()[0]})"
        ) from None
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: expected a DenseNet state dict, found {type(obj).__name__}")
    return state


def default_xrv_weights_path() -> Path:
    """Where TorchXRayVision itself caches densenet121-res224-chex (no download here)."""
    xrv = _xrv()
    url = xrv.models.model_urls[XRV_WEIGHTS_NAME]["weights_url"]
    return Path(os.path.expanduser(xrv.utils.get_cache_dir())) / os.path.basename(url)


def build_xrv_densenet(num_classes: int) -> nn.Module:
    """xrv DenseNet-121 architecture, no weights, plain logits (no op_threshs, no sigmoid)."""
    xrv = _xrv()
    model = xrv.models.DenseNet(num_classes=num_classes, weights=None, apply_sigmoid=False)
    model.op_threshs = None
    return model


class Teacher(nn.Module):
    """Frozen teacher returning (logits (B, 14), KD weight mask (14,))."""

    def __init__(self, densenet: nn.Module, kind: str):
        super().__init__()
        if kind not in ("xrv", "finetune"):
            raise ConfigError(f"unknown teacher kind {kind!r}")
        self.densenet = densenet
        self.kind = kind
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # a frozen teacher stays in eval mode (BN stats fixed)
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.densenet(x)
        if self.kind == "xrv":
            return adapt_xrv_logits(logits)
        return logits, logits.new_ones(NUM_LABELS)


def load_xrv_teacher(path: Path | None = None) -> Teacher:
    model = build_xrv_densenet(len(XRV_CHEX_OUTPUTS))
    model.load_state_dict(load_xrv_state_dict(path or default_xrv_weights_path()))
    return Teacher(model, "xrv")


def finetune_init(path: Path | None) -> nn.Module:
    """A 14-head xrv DenseNet; when xrv weights are given, start from them, initialising each
    head row from the matching xrv output (No Finding and unmatched rows start fresh)."""
    model = build_xrv_densenet(NUM_LABELS)
    if path is not None:
        state = load_xrv_state_dict(path)
        head_w, head_b = state.pop("classifier.weight"), state.pop("classifier.bias")
        state.pop("op_threshs", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"classifier.weight", "classifier.bias", "op_threshs"}:
            raise ArtifactError(f"{path}: does not match DenseNet-121 (missing {missing}, unexpected {unexpected})")
        with torch.no_grad():
            for ours, theirs in XRV_TO_CHEXPERT.items():
                model.classifier.weight[ours] = head_w[theirs]
                model.classifier.bias[ours] = head_b[theirs]
    return model
