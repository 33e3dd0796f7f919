"""Overlay PNGs for predict: the radiograph, the MXA ROI boxes, the attention heatmap, the top findings.

Numpy and Pillow only (no matplotlib on the runtime path): the colormap is a small
piecewise-linear table evaluated with ``np.interp``.

What is drawn, on the radiograph at its own aspect ratio (long side capped at ``max_side``,
``MAX_SIDE`` unless asked otherwise):
- the spatial attention map of the first MXA block, resized to its box's pixel extent and
  blended inside that box (min-max scaled within the map: it shows where the block looked,
  relative to the rest of the box, not an absolute level);
- every MXA ROI box, thin; the deepest one (the last) thick and bright;
- the top findings with their probabilities, positives (at or above threshold) marked.

The gray image given may be a downscaled copy of the original (``Predictor.predict_files`` with
``keep_image`` keeps one, ``downscale``): the overlay's size and the scale of the boxes come
from the result's ``width`` and ``height``, the ORIGINAL image's, which its boxes are in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mxa_edge.support.fileio import atomic_path

# Anchor colours of a perceptually ordered dark-blue -> cyan -> yellow -> red ramp
# (close to "turbo" at these stops), positions in [0, 1].
_CMAP_POS = np.array([0.0, 0.15, 0.35, 0.5, 0.65, 0.85, 1.0])
_CMAP_RGB = np.array(
    [
        [48, 18, 59],
        [70, 107, 227],
        [27, 208, 213],
        [97, 252, 108],
        [210, 233, 53],
        [254, 155, 45],
        [180, 20, 4],
    ],
    dtype=np.float64,
)

BOX_COLOUR = (255, 200, 0)  # shallower MXA boxes
DEEP_BOX_COLOUR = (255, 40, 40)  # the deepest MXA box
POSITIVE_COLOUR = (255, 90, 90)
TEXT_COLOUR = (240, 240, 240)

MAX_SIDE = 1024  # the overlay's long side, in pixels, unless asked otherwise


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3)."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    rgb = np.stack([np.interp(v, _CMAP_POS, _CMAP_RGB[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def fitted_size(height: int, width: int, max_side: int) -> tuple[tuple[int, int], float]:
    """((width, height) with the long side at most ``max_side``, the scale factor); never enlarged."""
    scale = min(1.0, max_side / max(height, width))
    return (max(1, round(width * scale)), max(1, round(height * scale))), scale


def downscale(gray: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Gray float (H, W) -> float32 copy with the long side at most ``max_side`` (bilinear,
    antialiased), the size ``render_overlay`` draws at; a small enough image comes back as is."""
    from PIL import Image

    h, w = gray.shape
    size, scale = fitted_size(h, w, max_side)
    if scale >= 1.0:
        return gray
    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float32)


def _to_rgb(gray: np.ndarray, height: int, width: int, max_side: int):
    """Gray [0, 1] of an image of ``height`` x ``width`` pixels (possibly already downscaled)
    -> (RGB Pillow image with the long side <= max_side, scale from original pixels to it)."""
    from PIL import Image

    size, scale = fitted_size(height, width, max_side)
    img = Image.fromarray(np.round(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    if img.size != size:
        img = img.resize(size, Image.BILINEAR)
    return img.convert("RGB"), scale


def _blend_attention(img, attention: np.ndarray, box, scale: float, alpha: float) -> None:
    """Blend the colormapped attention map into ``img`` inside ``box`` (original pixels), in place."""
    from PIL import Image

    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, img.width), min(y2, img.height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    att = np.asarray(attention, dtype=np.float32)
    lo, hi = float(att.min()), float(att.max())
    unit = (att - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(att)
    resized = np.asarray(Image.fromarray(unit, mode="F").resize((x2 - x1, y2 - y1), Image.BILINEAR))
    heat = colormap(resized).astype(np.float32)
    base = np.asarray(img, dtype=np.float32)
    region = base[y1:y2, x1:x2]
    a = alpha * (0.35 + 0.65 * np.clip(resized, 0.0, 1.0))[..., None]  # hotter = more opaque
    base[y1:y2, x1:x2] = region * (1 - a) + heat * a
    img.paste(Image.fromarray(np.round(base).astype(np.uint8), mode="RGB"))


def label_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # pragma: no cover - very old Pillow
        return ImageFont.load_default()


def render_overlay(gray: np.ndarray, result, *, max_side: int = MAX_SIDE, top_k: int = 5, alpha: float = 0.55):
    """The overlay of one ``PredictionResult`` on its gray image (the original or a downscaled
    copy of it, e.g. ``result.image``); returns a Pillow RGB image."""
    from PIL import Image, ImageDraw

    img, scale = _to_rgb(gray, result.height, result.width, max_side)
    if result.attention is not None and result.attention_box is not None:
        _blend_attention(img, result.attention, result.attention_box, scale, alpha)
    draw = ImageDraw.Draw(img)
    side = min(img.width, img.height)
    width = max(1, side // 300)
    boxes = list(result.roi_boxes)
    for k, box in enumerate(boxes):
        deepest = k == len(boxes) - 1
        xy = [v * scale for v in box]
        draw.rectangle(xy, outline=DEEP_BOX_COLOUR if deepest else BOX_COLOUR, width=width * 3 if deepest else width)

    font = label_font(max(10, side // 40))
    lines = [(result.model_id, TEXT_COLOUR)]
    for label, p in result.ranked()[:top_k]:
        positive = label in result.positives
        lines.append((f"{'+ ' if positive else '  '}{label}: {p:.2f}", POSITIVE_COLOUR if positive else TEXT_COLOUR))
    pad = max(2, side // 150)
    heights = [draw.textbbox((0, 0), text, font=font)[3] for text, _ in lines]
    step = max(heights) + pad
    box_w = max(draw.textlength(text, font=font) for text, _ in lines) + 2 * pad
    # Text sits on a dark band so it stays readable over bright anatomy.
    band = img.crop((0, 0, int(min(box_w, img.width)), int(min(step * len(lines) + pad, img.height))))
    dark = np.asarray(band, dtype=np.float32) * 0.35
    img.paste(Image.fromarray(dark.astype(np.uint8), mode="RGB"), (0, 0))
    draw = ImageDraw.Draw(img)
    for i, (text, colour) in enumerate(lines):
        draw.text((pad, pad + i * step), text, fill=colour, font=font)
    return img


def save_overlay(gray: np.ndarray, result, path, **kwargs) -> Path:
    """Render and write the overlay PNG at ``path`` (written beside it, then renamed)."""

    path = Path(path)
    img = render_overlay(gray, result, **kwargs)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
