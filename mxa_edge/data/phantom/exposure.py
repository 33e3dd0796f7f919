"""From canonical density to the saved 8-bit image: framing, blur, exposure and noise.

``framing`` draws the image's rotation, zoom and shift; ``box_to_output`` maps a canonical
box through it into output pixels, so ground-truth boxes follow the patient.

The portable (AP) look: looser framing (more of the neck and abdomen in the field), more
scatter (a grey veil: lower contrast), more blur (longer exposure, no grid) and more quantum
noise; PA films are tighter, sharper and cleaner. Both get film grain.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from mxa_edge.data.phantom.geometry import Box, grid


def framing(rng: np.random.Generator, size: int, ap: bool = False) -> tuple[tuple[float, ...], np.ndarray]:
    """PIL affine data (output -> canonical pixel) and its 2x3 inverse (canonical -> output)."""
    angle = math.radians(rng.uniform(-5.0, 5.0) * (1.4 if ap else 1.0))
    scale = rng.uniform(1.00, 1.14) if ap else rng.uniform(0.94, 1.06)  # > 1 zooms out
    tx, ty = rng.uniform(-0.04, 0.04) * size, rng.uniform(-0.05, 0.03) * size
    ca, sa = scale * math.cos(angle), scale * math.sin(angle)
    cx = cy = size / 2.0
    a, b, d, e = ca, -sa, sa, ca
    c_, f = cx + tx - a * cx - b * cy, cy + ty - d * cx - e * cy
    m = np.array([[a, b], [d, e]])
    inv = np.linalg.inv(m)
    forward = np.hstack([inv, (-inv @ np.array([c_, f]))[:, None]])
    return (a, b, c_, d, e, f), forward


def apply_framing(density: np.ndarray, affine: tuple[float, ...], size: int) -> np.ndarray:
    """Resample the canonical density through ``framing``'s affine (outside the frame is 0)."""
    framed = Image.fromarray(density.astype(np.float32), "F").transform(
        (size, size), Image.AFFINE, affine, resample=Image.BILINEAR, fillcolor=0.0
    )
    return np.asarray(framed)


def box_to_output(box: Box, forward: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The pixel box (x1, y1, x2, y2) in the framed image that encloses canonical ``box``."""
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]]) * size
    out = corners @ forward[:, :2].T + forward[:, 2]
    x1, y1 = np.clip(out.min(axis=0), 0, size)
    x2, y2 = np.clip(out.max(axis=0), 0, size)
    return float(x1), float(y1), float(x2), float(y2)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 5-tap Gaussian blur (edge padded)."""
    k = np.exp(-0.5 * (np.arange(-2, 3) / max(sigma, 1e-3)) ** 2).astype(np.float32)
    k /= k.sum()
    p = np.pad(img, 2, mode="edge")
    h, w = img.shape
    rows = sum(k[i] * p[:, i : i + w] for i in range(5))
    return sum(k[i] * rows[i : i + h, :] for i in range(5))


def expose(
    rng: np.random.Generator, density: np.ndarray, size: int, noise: np.ndarray | None = None, ap: bool = False
) -> np.ndarray:
    """Density -> 8-bit detector image: blur, exposure/contrast/gamma, scatter veil, heel
    effect, quantum noise and film grain (portable AP films: more of each)."""
    r = rng.random(7)
    blur = ((0.7 + 0.6 * r[0]) if ap else (0.5 + 0.4 * r[0])) * size / 256.0
    gain, bias, gamma = 1.15 + 0.3 * r[1], -0.08 + 0.10 * r[2], 0.8 + 0.45 * r[3]
    veil = (0.05 + 0.07 * r[4]) if ap else 0.02 * r[4]  # scatter lifts the blacks, flattens contrast
    sigma = (0.028 + 0.022 * r[5]) if ap else (0.014 + 0.016 * r[5])
    heel = 0.16 * (r[6] - 0.5)
    img = _blur(density, blur)
    img = np.clip(img * gain + bias, 0.0, 1.0) ** gamma
    img = veil + (1.0 - veil) * img
    img = img * (1.0 + heel * (grid(size).v - 0.5))
    n = rng.standard_normal((size, size), dtype=np.float32) if noise is None else noise
    grain = _blur(rng.standard_normal((size, size), dtype=np.float32), 0.8)
    img = img + sigma * np.sqrt(img + 0.02) * n + 0.4 * sigma * grain
    return np.clip(img * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
