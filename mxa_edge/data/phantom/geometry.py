"""The canonical image grid and the small geometry and noise helpers every painter uses.

Everything is drawn on a canonical frame: u (x, to the right) and v (y, down) in [0, 1],
before the image's own rotation, shift and zoom (``exposure.framing``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]  # canonical (u1, v1, u2, v2) in [0, 1]

HILA = ((0.39, 0.43), (0.61, 0.41))  # nominal hila (right lung = image left, left lung)


@dataclass(frozen=True)
class Grid:
    size: int
    u: np.ndarray  # (1, S) canonical x in [0, 1]
    v: np.ndarray  # (S, 1) canonical y in [0, 1]
    ax: np.ndarray  # (1, S) |u - 0.5|
    left: np.ndarray  # (1, S) bool: image-left half = patient's right
    theta_bin: np.ndarray  # (S, S) int: angle around the nearer hilum, in 360 bins
    radius: np.ndarray  # (S, S) distance to the nearer hilum
    radial_mix: np.ndarray  # (S, S) 0 near the hilum -> 1 at the periphery


@functools.lru_cache(maxsize=8)
def grid(size: int) -> Grid:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = c[None, :], c[:, None]
    hu = np.where(u < 0.5, HILA[0][0], HILA[1][0]).astype(np.float32)
    hv = np.where(u < 0.5, HILA[0][1], HILA[1][1]).astype(np.float32)
    du, dv = u - hu, v - hv
    radius = np.sqrt(du * du + dv * dv).astype(np.float32)
    theta = np.arctan2(dv, du)
    theta_bin = ((theta + math.pi) * (180.0 / math.pi)).astype(np.int16) % 360
    radial_mix = np.clip(radius / 0.3, 0.0, 1.0).astype(np.float32)
    arrays = (u, v, np.abs(u - 0.5), u < 0.5, theta_bin, radius, radial_mix)
    for a in arrays:
        a.flags.writeable = False
    return Grid(size, *arrays)


def ramp(x, width: float):
    """Soft step 0 -> 1 across x = -width/2 .. width/2 (a cheap sigmoid)."""
    return np.clip(x * (1.0 / width) + 0.5, 0.0, 1.0)


def window(g: Grid, box: Box) -> tuple[slice, slice]:
    """The (rows, columns) slices of the grid that cover ``box``, one pixel of margin."""
    s = g.size
    r0, r1 = max(0, int(box[1] * s)), min(s, int(math.ceil(box[3] * s)) + 1)
    c0, c1 = max(0, int(box[0] * s)), min(s, int(math.ceil(box[2] * s)) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def clip_box(b: Box) -> Box:
    return (max(0.0, b[0]), max(0.0, b[1]), min(1.0, b[2]), min(1.0, b[3]))


def smooth_profile(rng: np.random.Generator, n: int, sparsity: float) -> np.ndarray:
    """A circular 1-D profile of sparse smoothed spikes (vessel / bronchus directions)."""
    p = rng.random(n).astype(np.float32) ** sparsity
    return (0.25 * np.roll(p, 1) + 0.5 * p + 0.25 * np.roll(p, -1)).astype(np.float32)


def lowres_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise (unit-ish std) made by upsampling a coarse random field."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BICUBIC))
