"""Images a chest X-ray model must not answer for: the input guard's challenge set.

Four kinds, each a failure seen at the point of care:

* ``lateral``: lateral views of the same dataset (read from its CSV; the model trains on frontal
  views only);
* ``inverted``: frontal images with their gray levels reversed (a MONOCHROME1/2 mix-up, or a
  negative exported by a viewer);
* ``texture``: natural-looking textures (multi-octave noise with blobs and edges, like a photo
  of fabric, foliage or stone) at random contrast and exposure;
* ``document``: a scanned page: dark text lines, a header band and a table on a light ground.

Generated images are gray float (H, W) in [0, 1], deterministic for a seed, at any size; they
make no claim beyond "not a chest radiograph". numpy and Pillow only.
"""

from __future__ import annotations

import numpy as np

from mxa_edge.data.arrays import load_split_arrays
from mxa_edge.data.chexpert import read_split, subset

CHALLENGE_KINDS = ("lateral", "inverted", "texture", "document")


def inverted(images: np.ndarray) -> np.ndarray:
    """Gray images in [0, 1] with their polarity reversed."""
    return 1.0 - np.asarray(images, dtype=np.float32)


def texture_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` natural-looking textures (N, size, size) in [0, 1]."""
    from PIL import Image

    rng = np.random.default_rng([seed, 1])
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        img = np.zeros((size, size))
        # 1/f-like noise: octaves of upsampled random grids with falling amplitude.
        for octave in range(1, 6):
            cells = 2**octave + int(rng.integers(0, 3))
            grid = rng.standard_normal((cells, cells)).astype(np.float32)
            layer = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))
            img += layer / (octave ** float(rng.uniform(0.6, 1.4)))
        yy, xx = np.mgrid[0:size, 0:size] / size
        for _ in range(int(rng.integers(3, 12))):  # blobs (pebbles, leaves)
            cy, cx, r = rng.random(), rng.random(), rng.uniform(0.03, 0.2)
            img += rng.uniform(-1.5, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        if rng.random() < 0.5:  # oriented stripes (bark, fabric)
            angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 30)
            img += rng.uniform(0.3, 1.2) * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        lo, hi = np.percentile(img, [1, 99])
        unit = np.clip((img - lo) / (hi - lo + 1e-9), 0, 1)
        gamma, lo_out, hi_out = rng.uniform(0.5, 2.0), rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
        out[i] = lo_out + (hi_out - lo_out) * unit**gamma
    return out


def document_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` scanned-page images (N, size, size) in [0, 1]: dark text on a light page."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng([seed, 2])
    font = ImageFont.load_default()
    words = "patient report findings impression clinical history dose date signed radiology department".split()
    out = np.empty((n, size, size), np.float32)
    canvas = max(size, 256)  # draw at a readable scale, then resize like a scanner would
    for i in range(n):
        page = Image.new("L", (canvas, canvas), int(rng.integers(215, 256)))
        draw = ImageDraw.Draw(page)
        margin = int(canvas * rng.uniform(0.04, 0.1))
        if rng.random() < 0.6:  # a letterhead band
            draw.rectangle([0, 0, canvas, int(canvas * rng.uniform(0.06, 0.14))], fill=int(rng.integers(60, 160)))
        y = int(canvas * 0.16)
        while y < canvas - margin:
            line = " ".join(rng.choice(words, size=int(rng.integers(4, 12))))
            draw.text((margin, y), line, fill=int(rng.integers(0, 70)), font=font)
            y += int(rng.integers(10, 18))
            if rng.random() < 0.08:  # a table rule
                draw.line([margin, y, canvas - margin, y], fill=int(rng.integers(0, 90)), width=1)
                y += 6
        img = np.asarray(page.resize((size, size), Image.BILINEAR), np.float32) / 255.0
        out[i] = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1)  # scanner noise
    return out


def generated_challenge(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The generated kinds (``texture``, ``document``), ``n`` images each."""
    return {"texture": texture_images(n, size, seed), "document": document_images(n, size, seed)}


def held_out_laterals(selection, preprocess, limit: int = 64):
    """Up to ``limit`` lateral views of the held-out CSV (``valid.csv``) of a ``DataSelection``'s
    dataset, as ``SplitArrays`` (uint8 at the model size), or None when it has none."""
    from pathlib import Path

    full = read_split(Path(selection.root), "valid", frontal_only=False)
    rows = [i for i, view in enumerate(full.views) if view.strip().lower() == "lateral"][:limit]
    if not rows:
        return None
    return load_split_arrays(Path(selection.root), subset(full, rows, "valid-lateral"), preprocess, cache=False)
