"""Student initialisation from a local timm EfficientViT checkpoint (``train --student-weights``).

What timm's ``load_pretrained`` does for ``timm.create_model('efficientvit_m0', pretrained=True,
in_chans=1, num_classes=14)``, from a file on this machine (never downloaded):

- the file is timm's state dict (``pytorch_model.bin`` / ``.pth`` read with
  ``torch.load(weights_only=True)``, or ``model.safetensors``); a checkpoint that wraps it under
  ``state_dict`` / ``model`` and DataParallel's ``module.`` prefixes are unwrapped as timm does;
- the RGB stem (the pretrained config's ``first_conv``) becomes one channel by summing over RGB
  (``timm.models.adapt_input_conv``), so a gray image x gives what the RGB stem gave (x, x, x);
- the classifier (the config's ``classifier``, ``head.linear``) is left at its fresh
  initialisation: 14 findings, not ImageNet's 1000 classes;
- attention biases are resized to the window resolution of our image size with timm's own
  ``checkpoint_filter_fn`` (at 128 px the later stages attend over smaller windows than at 224).

Every other backbone tensor must be in the file with our shape; the MXA blocks are new. Our
blocks that carry MXA wrap timm's attention (``mixer.m`` becomes ``mixer.attn``), so their keys
are renamed on the way in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mxa_edge.support.errors import ArtifactError
from mxa_edge.support.fileio import sha256_file

# Where timm's backbone lives inside MultiLabelStudent.
BACKBONE_PREFIX = "backbone."
# Checkpoint wrappers timm's load_state_dict unwraps (a training checkpoint rather than weights).
_WRAPPER_KEYS = ("state_dict", "model")


@dataclass
class StudentInit:
    """What ``load_student_weights`` did: recorded in the run manifest (``student_init``)."""

    weights: str
    sha256: str
    timm_model: str
    loaded: int  # tensors copied from the file (adapted ones included)
    adapted: dict[str, str] = field(default_factory=dict)  # our key -> how it was adapted
    new: dict[str, int] = field(default_factory=dict)  # module -> tensors left at their initialisation
    ignored: list[str] = field(default_factory=list)  # file keys deliberately not used (the old classifier)

    def to_dict(self) -> dict:
        return {"kind": "pretrained", **self.__dict__}

    def summary(self) -> str:
        new = ", ".join(f"{module} ({n})" for module, n in self.new.items()) or "none"
        return (
            f"student initialised from {self.weights} ({self.timm_model}, sha256 {self.sha256[:12]}…): "
            f"{self.loaded} tensors loaded ({len(self.adapted)} adapted: "
            f"{', '.join(sorted(set(self.adapted.values()))) or 'none'}); new: {new}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a local .safetensors, .pth/.pt or .bin file, or one clear error."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: student weights not found (give a local timm EfficientViT checkpoint file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file for the user
            raise ArtifactError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        # weights_only: a weights file must not be able to run code when it is read.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unpicklable or foreign file
        raise ArtifactError(f"{path}: not a loadable PyTorch weights file ({str(exc).splitlines()[0]})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path}: not a state dict (expected a mapping of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _timm_names(variant: str) -> tuple[str, str, str]:
    """(timm model name, first conv, classifier) from timm's own pretrained config for the variant."""
    import timm

    name = f"efficientvit_{variant}"
    cfg = timm.models.get_pretrained_cfg(name)
    return name, cfg.first_conv, cfg.classifier


def _fits(key: str, value: torch.Tensor, ours: torch.Tensor) -> bool:
    """Same shape, or an attention-bias table of the same heads that timm's filter resizes."""
    if key.endswith("attention_biases"):
        return value.ndim == 2 and value.shape[0] == ours.shape[0]
    return value.shape == ours.shape


def _new_module(key: str) -> str:
    """The module a key belongs to, with an MXA block's whole subtree as one module."""
    parts = key.split(".")
    if "mxa" in parts:
        return ".".join(parts[: parts.index("mxa") + 1])
    return ".".join(parts[:-1])


def load_student_weights(student: nn.Module, path: Path) -> StudentInit:
    """Load a timm EfficientViT checkpoint into ``student`` (a ``MultiLabelStudent``) in place."""
    from timm.models import adapt_input_conv
    from timm.models.efficientvit_msra import checkpoint_filter_fn

    path = Path(path)
    state = read_state_dict(path)
    timm_model, first_conv, classifier = _timm_names(student.spec.variant)
    ours = student.state_dict()
    adapted: dict[str, str] = {}
    ignored = sorted(k for k in state if k.startswith(classifier + "."))
    renamed: dict[str, torch.Tensor] = {}  # backbone key (timm's layout, our block names) -> tensor
    unknown = []
    for key, value in state.items():
        if key in ignored or key.endswith("attention_bias_idxs"):  # idxs: rebuilt from the resolution
            continue
        wrapped = key.replace(".mixer.m.", ".mixer.attn.")
        target = key if BACKBONE_PREFIX + key in ours else wrapped
        if BACKBONE_PREFIX + target not in ours:
            unknown.append(key)
            continue
        renamed[target] = value
    if unknown:
        raise ArtifactError(
            f"{path}: {len(unknown)} tensors have no place in {timm_model} (e.g. {unknown[0]}); "
            f"is it a timm {timm_model} checkpoint?"
        )
    stem = first_conv + ".weight"
    if stem in renamed and renamed[stem].shape[1] != ours[BACKBONE_PREFIX + stem].shape[1]:
        renamed[stem] = adapt_input_conv(ours[BACKBONE_PREFIX + stem].shape[1], renamed[stem])
        adapted[BACKBONE_PREFIX + stem] = "RGB stem summed to 1 channel"
    mismatched = [k for k, v in renamed.items() if not _fits(k, v, ours[BACKBONE_PREFIX + k])]
    if mismatched:
        k = mismatched[0]
        raise ArtifactError(
            f"{path}: {len(mismatched)} tensors do not fit {timm_model} (e.g. {k}: {tuple(renamed[k].shape)} in the "
            f"file, {tuple(ours[BACKBONE_PREFIX + k].shape)} here); is it a checkpoint of another variant?"
        )
    # timm's own filter: interpolates attention-bias tables to our window resolution.
    for key, value in checkpoint_filter_fn(renamed, student.backbone).items():
        if value.shape != renamed[key].shape:
            adapted[BACKBONE_PREFIX + key] = "attention biases resized to the window resolution"
        renamed[key] = value
    loaded = {BACKBONE_PREFIX + k: v for k, v in renamed.items()}
    new = [k for k in ours if k not in loaded]
    missing = [k for k in new if ".mxa." not in k and not k.startswith(BACKBONE_PREFIX + classifier + ".")]
    if missing:
        raise ArtifactError(
            f"{path}: {len(missing)} tensors of {timm_model} are missing from the file "
            f"(e.g. {missing[0].removeprefix(BACKBONE_PREFIX)}); is it a complete {timm_model} checkpoint?"
        )
    student.load_state_dict({**ours, **loaded})  # strict: every key accounted for
    return StudentInit(
        weights=str(path.resolve()),  # absolute: eval rebuilds the run's start from it, from any folder
        sha256=sha256_file(path),
        timm_model=timm_model,
        loaded=len(loaded),
        adapted=adapted,
        new=dict(Counter(_new_module(k) for k in new)),
        ignored=ignored,
    )
