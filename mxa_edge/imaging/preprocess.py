"""Preprocessing contract: the one definition shared by training, export, calibration and predict.

A radiograph arrives as a 2-D float image in [0, 1] (``mxa_edge.imaging.imageio.load_radiograph``).
The model sees it centre-cropped to a square, resized to ``image_size`` and scaled to
TorchXRayVision's [-1024, 1024] range, as one channel. The exported artifact's manifest
carries ``Preprocess.to_dict()`` and predict rebuilds it with ``Preprocess.from_dict``, so
inference can never use settings that differ from training.

Only numpy and Pillow here: this module is on the light runtime path (no torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# TorchXRayVision's input scaling: pixel values mapped linearly to [-1024, 1024].
XRV_RANGE = 1024.0


@dataclass(frozen=True)
class Preprocess:
    image_size: int = 224
    crop: str = "center"  # centre square crop, as xrv.datasets.XRayCenterCrop
    interpolation: str = "bilinear"  # antialiased (Pillow scales the filter when shrinking)
    value_range: tuple[float, float] = (-XRV_RANGE, XRV_RANGE)
    channels: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value_range"] = list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        d = dict(d)
        d["value_range"] = tuple(d.get("value_range", (-XRV_RANGE, XRV_RANGE)))
        return cls(**d)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, side, side) of the centre square crop in source pixels."""
        side = min(height, width)
        top = (height - side) // 2
        left = (width - side) // 2
        return top, left, side, side

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """Gray image in [0, 1], shape (H, W) -> float32 array (1, S, S) in value_range."""
        return prepare(gray, self)

    def box_to_image(self, box: np.ndarray, height: int, width: int) -> np.ndarray:
        """Map normalized [x1, y1, x2, y2] boxes (model input frame) to source image pixels."""
        top, left, side, _ = self.crop_box(height, width)
        box = np.asarray(box, dtype=np.float64)
        out = np.empty_like(box)
        out[..., 0] = left + box[..., 0] * side
        out[..., 2] = left + box[..., 2] * side
        out[..., 1] = top + box[..., 1] * side
        out[..., 3] = top + box[..., 3] * side
        return out


def _pil_filter(name: str):
    from PIL import Image

    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "area": Image.BOX, "lanczos": Image.LANCZOS}
    try:
        return filters[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {sorted(filters)}") from None


def center_crop_resize(gray: np.ndarray, image_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Centre square crop then resize; float32 in, float32 out (values kept in their range)."""
    from PIL import Image

    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {gray.shape}")
    h, w = gray.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(gray[top : top + side, left : left + side], dtype=np.float32)
    if side == image_size:
        return square
    img = Image.fromarray(square, mode="F")
    return np.asarray(img.resize((image_size, image_size), _pil_filter(interpolation)), dtype=np.float32)


def unit_to_range(x01, value_range=(-XRV_RANGE, XRV_RANGE)):
    """[0, 1] -> the model's input range: THE formula, for numpy arrays and torch tensors alike
    (training batches are scaled after augmentation, on the tensor)."""
    lo, hi = value_range
    return x01 * (hi - lo) + lo


def scale_to_range(gray01: np.ndarray, value_range=(-XRV_RANGE, XRV_RANGE)) -> np.ndarray:
    return unit_to_range(np.clip(gray01, 0.0, 1.0), value_range).astype(np.float32)


def prepare(gray: np.ndarray, pp: Preprocess) -> np.ndarray:
    resized = center_crop_resize(gray, pp.image_size, pp.interpolation)
    return scale_to_range(resized, pp.value_range)[None]
