"""Grayscale-safe RandAugment-style augmentation, batched, with an explicit generator.

Each image gets ``num_ops`` operations drawn from a radiograph-safe pool with magnitude
``magnitude`` (0-10 scale, jittered by ``magnitude_std`` as timm's "rand-m5-mstd0.2").
Left out on purpose: invert, solarize and posterize (they create intensities an X-ray
detector never produces, and inversion flips the radiographic convention) and colour ops
(no-ops on one channel). No horizontal flips: cardiac and mediastinal findings are
lateralised.

Why not timm's RandAugment: it draws from Python's and numpy's global RNGs per PIL image;
this version runs on whole batches (CPU or GPU) from a ``torch.Generator`` so a resumed run
reproduces the same augmentations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mxa_edge.support.errors import ConfigError

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "scale")
INTENSITY_OPS = ("contrast", "brightness", "gamma", "sharpness", "noise")
OPS = GEOMETRIC_OPS + INTENSITY_OPS

# Strength of each op at magnitude 10.
_MAX = {
    "rotate": math.radians(15.0),
    "shear_x": 0.15,
    "shear_y": 0.15,
    "translate_x": 0.10,  # fraction of the image side
    "translate_y": 0.10,
    "scale": 0.15,
    "contrast": 0.4,
    "brightness": 0.2,
    "gamma": 0.4,
    "sharpness": 0.8,
    "noise": 0.04,
}


class RandAugmentGray:
    def __init__(self, num_ops: int = 2, magnitude: float = 5.0, magnitude_std: float = 0.2 * 5.0):
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, rows: slice | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        """x: (B, 1, H, W) floats in [0, 1] -> augmented, same shape and range.

        Under DDP each rank holds ``rows`` of a global batch of ``batch_size``: parameters
        are drawn for the whole global batch from the shared generator and sliced, so the
        augmentations are the same as in a single-process run.
        """
        b = batch_size or x.shape[0]
        rows = rows if rows is not None else slice(None)
        dev = x.device
        # Choose num_ops distinct ops per image: argsort of random keys.
        keys = torch.rand(b, len(OPS), generator=generator)
        chosen = torch.zeros(b, len(OPS), dtype=torch.bool)
        chosen.scatter_(1, keys.argsort(dim=1)[:, : self.num_ops], True)
        mag = (self.magnitude + self.magnitude_std * torch.randn(b, len(OPS), generator=generator)).clamp(0, 10) / 10
        sign = torch.where(torch.rand(b, len(OPS), generator=generator) < 0.5, -1.0, 1.0)
        amount = {op: (chosen[:, i] * mag[:, i] * sign[:, i] * _MAX[op])[rows].to(dev) for i, op in enumerate(OPS)}
        noise = torch.randn((b, *x.shape[1:]), generator=generator)[rows].to(dev)
        x = self._geometric(x, amount)
        x = self._intensity(x, amount, noise)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def _geometric(x: torch.Tensor, a: dict[str, torch.Tensor]) -> torch.Tensor:
        if not any(bool(a[op].any()) for op in GEOMETRIC_OPS):
            return x
        cos, sin = torch.cos(a["rotate"]), torch.sin(a["rotate"])
        s = 1.0 + a["scale"]
        # Output->input sampling matrix (theta for affine_grid) = rotation * shear / scale.
        m00 = (cos - sin * a["shear_y"]) / s
        m01 = (cos * a["shear_x"] - sin) / s
        m10 = (sin + cos * a["shear_y"]) / s
        m11 = (sin * a["shear_x"] + cos) / s
        theta = torch.stack(
            [torch.stack([m00, m01, 2 * a["translate_x"]], 1), torch.stack([m10, m11, 2 * a["translate_y"]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Border padding: a radiograph's edge (collimation, air) continues rather than going black.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @staticmethod
    def _intensity(x: torch.Tensor, a: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        v = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1.0 + v(a["contrast"])) + mean
        x = x + v(a["brightness"])
        x = x.clamp(0.0, 1.0) ** torch.exp(v(a["gamma"]))
        if bool(a["sharpness"].any()):
            blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            x = x + v(a["sharpness"]) * (x - blurred)  # >0 sharpens, <0 blurs
        x = x + v(a["noise"].abs()) * noise
        return x


def parse_augment(spec: str) -> RandAugmentGray | None:
    """``TrainConfig.augment`` -> the transform: 'rand-m5-mstd1' (timm-style: magnitude 5,
    magnitude std 1) or 'none'."""
    if spec in ("none", "", None):
        return None
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ConfigError(f"unknown augmentation {spec!r}; use e.g. 'rand-m5-mstd1' or 'none'")
    kw = {"magnitude": 5.0, "magnitude_std": 1.0, "num_ops": 2}
    for p in parts[1:]:
        if p.startswith("mstd"):
            kw["magnitude_std"] = float(p[4:])
        elif p.startswith("m"):
            kw["magnitude"] = float(p[1:])
        elif p.startswith("n"):
            kw["num_ops"] = int(p[1:])
        else:
            raise ConfigError(f"unknown augmentation part {p!r} in {spec!r}")
    return RandAugmentGray(**kw)
