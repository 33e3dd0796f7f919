"""Student model variants as data (the paper's Table H.1), not subclasses.

This module is torch-free so the CLI, manifests and the runtime can read model configs
without the [train] extra (so it lives in ``formats``).
``mxa_edge.torch_side.models.student.build_student`` turns a ``ModelSpec`` into a network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from mxa_edge.labels import NUM_LABELS
from mxa_edge.support.errors import ConfigError


@dataclass(frozen=True)
class VariantConfig:
    """Stage widths C_i, depths L_i and heads H_i of one EfficientViT-MultiLabel variant."""

    embed_dim: tuple[int, int, int]
    depth: tuple[int, int, int]
    num_heads: tuple[int, int, int]
    # Kernel sizes of the per-head depthwise convs on queries (timm's EfficientViT-MSRA values).
    kernels: tuple[int, int, int, int] = (5, 5, 5, 5)
    window_size: tuple[int, int, int] = (7, 7, 7)
    key_dim: tuple[int, int, int] = (16, 16, 16)


# Table H.1 of the MXA paper; kernels from the matching timm efficientvit_m* definitions.
VARIANTS: dict[str, VariantConfig] = {
    "m0": VariantConfig((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    "m1": VariantConfig((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    "m2": VariantConfig((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    "m3": VariantConfig((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    "m4": VariantConfig((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    "m5": VariantConfig((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
}

MXA_PLACEMENTS = ("stage", "block")
MXA_FUSIONS = ("zoom", "paste")


@dataclass(frozen=True)
class MXAConfig:
    """Settings of the Medical X-ray Attention block (paper section 3.2, appendices C-D)."""

    # "stage": one MXA beside the attention of the last block of each stage ("each stage
    # contains a parallel MXA block"); "block": beside every attention ("in parallel with
    # the MHSA layers"). Chosen by benchmarks/ablation.py.
    placement: str = "stage"
    channel_reduction: int = 8  # r of the CBAM channel MLP
    spatial_kernel: int = 3  # the paper uses kernel 3 in its ROI components
    roi_hidden: int = 16  # width of the light ROI predictor
    min_box_size: float = 0.25  # smallest ROI side, as a fraction of the feature map
    # How the refined ROI features meet the full-frame residual. "zoom" (the paper's text):
    # the ROI resized to the whole map is added as is, so ROI position (i, j) lands on image
    # position (i, j). "paste": the refined ROI is sampled back into its own box of the full
    # map (the crop's inverse), zeros outside. Compared by benchmarks/fusion_ablation.py.
    fusion: str = "zoom"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a student network; stored in every manifest."""

    variant: str = "m0"
    image_size: int = 224
    num_classes: int = NUM_LABELS
    mxa: MXAConfig | None = field(default_factory=MXAConfig)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown model {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.image_size % 16 or self.image_size < 64:
            raise ConfigError(f"image size must be a multiple of 16 and at least 64, got {self.image_size}")
        if self.mxa is not None and self.mxa.placement not in MXA_PLACEMENTS:
            raise ConfigError(f"unknown MXA placement {self.mxa.placement!r}; expected one of {MXA_PLACEMENTS}")
        if self.mxa is not None and self.mxa.fusion not in MXA_FUSIONS:
            raise ConfigError(f"unknown MXA fusion {self.mxa.fusion!r}; expected one of {MXA_FUSIONS}")

    @property
    def variant_config(self) -> VariantConfig:
        return VARIANTS[self.variant]

    @property
    def name(self) -> str:
        mxa = "" if self.mxa is None else "-mxa" if self.mxa.fusion == "zoom" else f"-mxa-{self.mxa.fusion}"
        return f"efficientvit-multilabel-{self.variant}{mxa}-{self.image_size}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        mxa = d.get("mxa")
        d["mxa"] = MXAConfig(**mxa) if mxa else None
        return cls(**d)

    def with_(self, **changes) -> "ModelSpec":
        return replace(self, **changes)
