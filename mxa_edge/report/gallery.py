"""The overlay gallery: a few validation images through the runtime ``Predictor`` and
``render_overlay`` (MXA ROI boxes + attention heatmap + top findings), with the phantom
ground-truth boxes (boxes.csv) drawn dashed in cyan on top when the dataset has them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from mxa_edge.labels import CHEXPERT_LABELS, LABEL_ABBREVIATIONS
from mxa_edge.runtime.overlay import label_font, render_overlay
from mxa_edge.runtime.predict import PredictionResult, Predictor

GT_COLOUR = (0, 230, 255)
# Boxes that span the lungs or the chest rather than a lesion (as in evaluation.roi_localization).
_NOT_LESIONS = ("No Finding", "Support Devices")


@dataclass
class GalleryItem:
    file: str  # path relative to the dataset root's parent, as in the CSV
    png: bytes
    positives: list[str]
    truth: list[str]  # findings labelled positive (with a box, when boxes.csv has one)
    boxes_drawn: int = 0
    problems: list[str] = field(default_factory=list)


def pick_images(split, boxes: dict, n: int) -> list[int]:
    """Indices of ``n`` validation images: those with a lesion box first, in CSV order."""
    with_lesion = [
        i for i, rel in enumerate(split.rel_paths) if any(lab not in _NOT_LESIONS for lab, _ in boxes.get(rel, []))
    ]
    rest = [i for i in range(len(split.rel_paths)) if i not in set(with_lesion)]
    return (with_lesion + rest)[:n]


def _dashed_rectangle(draw, xy, colour, width: int, dash: int) -> None:
    x1, y1, x2, y2 = xy
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for k in range(0, steps, 2):
            t0, t1 = k / steps, min(1.0, (k + 1) / steps)
            draw.line(
                [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                fill=colour,
                width=width,
            )


def draw_truth(img, boxes: list) -> int:
    """Draw normalized ground-truth boxes (label, [x1, y1, x2, y2]) dashed; returns how many."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    sx, sy = img.width, img.height  # boxes are normalized to the saved image, whose aspect we keep
    side = min(img.width, img.height)
    font = label_font(max(9, side // 40))
    n = 0
    for label, box in boxes:
        if label in _NOT_LESIONS:
            continue
        xy = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        _dashed_rectangle(draw, xy, GT_COLOUR, max(2, side // 160), max(3, side // 60))
        draw.text(
            (xy[0] + 2, max(0, xy[3] - side // 30)), LABEL_ABBREVIATIONS.get(label, label), fill=GT_COLOUR, font=font
        )
        n += 1
    return n


def _upscaled(result, side: int):
    """Small images (phantoms are 128 px) enlarged to ``side`` so the overlay text stays legible;
    the result's pixel boxes are scaled with them."""
    from dataclasses import replace

    import numpy as np
    from PIL import Image

    gray = result.image
    h, w = gray.shape
    f = side / max(h, w)
    if f <= 1.0:
        return gray, result
    size = (max(1, round(w * f)), max(1, round(h * f)))
    big = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.BICUBIC))
    fx, fy = size[0] / w, size[1] / h

    def scale(b):
        return [b[0] * fx, b[1] * fy, b[2] * fx, b[3] * fy]

    return np.clip(big, 0.0, 1.0), replace(
        result,
        width=size[0],
        height=size[1],
        roi_boxes=[scale(b) for b in result.roi_boxes],
        attention_box=scale(result.attention_box) if result.attention_box is not None else None,
    )


def build_gallery(
    artifact_path, validation, n: int, max_side: int = 384, *, allow_rejected: bool = False
) -> list[GalleryItem]:
    """Overlays for ``n`` validation images; raises what Predictor raises (no engine here...).
    The caller has checked the artifact's signature; ``allow_rejected`` as it loaded it."""

    if n <= 0:
        return []
    split = validation.arrays.split
    idx = pick_images(split, validation.boxes, n)
    predictor = Predictor(artifact_path, allow_rejected=allow_rejected, trust=())
    items = []
    for i, res in zip(idx, predictor.predict_files([split.paths[i] for i in idx], keep_image=True)):
        rel = split.rel_paths[i]
        truth = [
            CHEXPERT_LABELS[c]
            for c in range(len(CHEXPERT_LABELS))
            if validation.arrays.mask[i, c] == 1 and validation.arrays.targets[i, c] == 1
        ]
        if not isinstance(res, PredictionResult):  # an error (.problem) or a skipped file (.reason)
            items.append(GalleryItem(rel, b"", [], truth, problems=[getattr(res, "problem", None) or res.reason]))
            continue
        gray, res = _upscaled(res, max_side)
        img = render_overlay(gray, res, max_side=max_side, top_k=3)
        drawn = draw_truth(img, validation.boxes.get(rel, []))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        items.append(GalleryItem(rel, buf.getvalue(), list(res.positives), truth, drawn))
    return items
