"""Findings: each painter draws one finding into the canvas and returns its canonical box.

A painter is ``painter(canvas, rng, severity, level) -> Box``: ``rng`` is the finding's own
child stream, ``severity`` in [0, 1] sets extents (small findings: subtle = small) and
``level`` the contrast (``specs.finding_level``, already divided by difficulty). The
structural findings (Cardiomegaly, Enlarged Cardiomediastinum, Atelectasis's raised
hemidiaphragm, Fracture) change the anatomy before it is drawn, in ``render.render_phantom``;
"Lung Opacity" alone is painted by ``paint_lung_opacity`` only when no opacity source is present.

Each mark is one a normal film never shows (no nipple-like dots, no line where the normal
lung has none): a finding the model has to find must not be part of the normal variation,
except Edema's faint end, which overlaps normal vessel strength on purpose.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from mxa_edge.data.phantom.anatomy import Anatomy, Canvas
from mxa_edge.data.phantom.geometry import HILA, Box, clip_box, ramp, smooth_profile, union, window
from mxa_edge.data.phantom.specs import finding_extent, finding_size

Painter = Callable[[Canvas, np.random.Generator, float, float], Box]


def _replace_air(c: Canvas, w, shape: np.ndarray, level: float, keep_markings: float = 0.0) -> None:
    """Fill ``level`` of the lung air under ``shape`` with fluid/tissue (the airspace opacities)."""
    c.extra[w] += level * c.air[w] * shape
    c.markings[w] *= 1.0 - (1.0 - keep_markings) * np.clip(shape * level, 0.0, 1.0)


def paint_lung_opacity(c: Canvas, rng, severity: float, level: float) -> Box:
    """Ground-glass haze: broad, soft-edged, vessels still visible through it."""
    side = int(rng.integers(2))
    r = finding_size("Lung Opacity", rng)
    cu, cv = c.a.random_lung_point(rng, side, 0.4 * r)
    ru, rv = r, r * (0.8 + 0.5 * rng.random())
    box = clip_box((cu - ru, cv - rv, cu + ru, cv + rv))
    w = window(c.g, box)
    d2 = ((c.g.u[:, w[1]] - cu) / ru) ** 2 + ((c.g.v[w[0]] - cv) / rv) ** 2
    shape = np.clip((1.0 - d2) * 1.5, 0.0, 1.0)
    _replace_air(c, w, shape, level, keep_markings=0.6)
    return box


def paint_lung_lesion(c: Canvas, rng, severity: float, level: float) -> Box:
    """A solid nodule or mass (10-41 mm by severity), lobulated, spiculated when large."""
    side = int(rng.integers(2))
    r = finding_extent("Lung Lesion", severity, rng)
    cu, cv = c.a.random_lung_point(rng, side, r + 0.01, (0.05, 0.85))
    box = clip_box((cu - 1.4 * r - 0.004, cv - 1.4 * r - 0.004, cu + 1.4 * r + 0.004, cv + 1.4 * r + 0.004))
    w = window(c.g, box)
    du, dv = c.g.u[:, w[1]] - cu, c.g.v[w[0]] - cv
    d = np.sqrt(du * du + dv * dv)
    ang = np.arctan2(dv, du)
    lobes = 1.0 + 0.10 * np.cos(3.0 * ang + 6.28 * rng.random()) + 0.06 * np.cos(7.0 * ang + 6.28 * rng.random())
    solid = np.clip((r * lobes - d) / (0.2 * r + 0.7 / c.g.size), 0.0, 1.0)
    spikes = np.clip(smooth_profile(rng, 360, 6.0)[((ang + math.pi) * (180 / math.pi)).astype(int) % 360] - 0.4, 0, 1)
    spicules = spikes * np.clip(1.0 - (d - r) / (0.4 * r + 1e-6), 0.0, 1.0) * (d > r * 0.9)
    c.extra[w] += level * (solid * (0.85 + 0.15 * np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1))) + 0.5 * spicules)
    c.markings[w] *= 1.0 - solid
    return box


def paint_edema(c: Canvas, rng, severity: float, level: float) -> Box:
    """Bilateral perihilar ("bat-wing") haze, engorged indistinct vessels with upper-zone
    redistribution, and Kerley B lines at the lateral bases."""
    a, g = c.a, c.g
    boxes = []
    sx = finding_size("Edema", rng)
    for side, (hu, hv) in enumerate(HILA):
        cu, cv = hu + (-0.03 if side == 0 else 0.03), hv + 0.03 + 0.03 * rng.random()
        lb = a.lung_box(side)
        box = clip_box((cu - 2.0 * sx, cv - 2.2 * sx, cu + 2.0 * sx, cv + 2.2 * sx))
        box = (max(box[0], lb[0]), max(box[1], lb[1]), min(box[2], lb[2]), min(box[3], lb[3]))
        w = window(g, box)
        haze = np.exp(-(((g.u[:, w[1]] - cu) / sx) ** 2) - ((g.v[w[0]] - cv) / (1.25 * sx)) ** 2)
        on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
        haze = haze * on_side * ramp(box[3] - 0.01 - g.v[w[0]], 0.02)
        c.extra[w] += level * c.air[w] * haze
        c.markings[w] *= 1.0 + 1.5 * level * haze  # engorged vessels
        boxes.append(box)
        # Kerley B: short horizontal lines at the lateral costophrenic region
        kv0 = a.dome[side] - 0.12
        kbox = clip_box(
            (0.5 - a.tw - 0.005, kv0, 0.5 - a.tw + 0.06, a.dome[side] + 0.02)
            if side == 0
            else (0.5 + a.tw - 0.06, kv0, 0.5 + a.tw + 0.005, a.dome[side] + 0.02)
        )
        kw = window(g, kbox)
        vv, axw = g.v[kw[0]], g.ax[:, kw[1]]
        inward = a.lateral_edge(vv) - axw
        lines = np.zeros((kw[0].stop - kw[0].start, kw[1].stop - kw[1].start), np.float32)
        for _ in range(3 + int(4 * severity)):
            lv = kv0 + 0.02 + (a.dome[side] - kv0 - 0.02) * rng.random()
            length = 0.02 + 0.015 * rng.random()
            lines += ramp(0.0035 - np.abs(vv - lv), 0.003) * ramp(length - inward, 0.006) * ramp(inward, 0.004)
        c.extra[kw] += level * 0.35 * np.clip(lines, 0.0, 1.0) * c.lung[kw]
        boxes.append(kbox)
    return union(boxes)


def paint_consolidation(c: Canvas, rng, severity: float, level: float) -> Box:
    """Dense lobar opacity with air bronchograms, one edge sharp along a fissure."""
    side = int(rng.integers(2))
    r = finding_extent("Consolidation", 0.5 + 0.5 * severity, rng)
    lower = rng.random() < 0.65
    cu, cv = c.a.random_lung_point(rng, side, 0.5 * r, (0.6, 0.9) if lower else (0.15, 0.45))
    ru, rv = r * (1.0 + 0.3 * rng.random()), r * (0.75 + 0.25 * rng.random())
    box = clip_box((cu - ru, cv - rv, cu + ru, cv + rv))
    w = window(c.g, box)
    g = c.g
    uu, vv = g.u[:, w[1]], g.v[w[0]]
    d2 = ((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2
    tilt = 0.3 * (rng.random() - 0.5)
    # the fissure bounds a lower-zone consolidation above and an upper-zone one below
    fissure_v = cv + (-0.5 if lower else 0.5) * rv + tilt * (uu - cu)
    fissure = ramp((vv - fissure_v) * (1 if lower else -1), 0.005)
    shape = np.clip((1.0 - d2) * 2.5, 0.0, 1.0) * fissure
    bronchi = smooth_profile(rng, 360, 9.0)[g.theta_bin[w]] * ramp(g.radius[w] - 0.05, 0.04)
    dense = shape * (1.0 - 0.6 * np.clip(bronchi * 2.5, 0.0, 1.0))
    _replace_air(c, w, dense, level)
    c.markings[w] *= 1.0 - shape
    return box


def paint_pneumonia(c: Canvas, rng, severity: float, level: float) -> Box:
    """Patchy, ill-defined, multifocal airspace opacities clustered in one zone."""
    side = int(rng.integers(2))
    r = finding_extent("Pneumonia", 0.5 + 0.5 * severity, rng)
    cu, cv = c.a.random_lung_point(rng, side, 0.5 * r, (0.35, 0.9))
    box = clip_box((cu - 1.5 * r, cv - 1.5 * r, cu + 1.5 * r, cv + 1.5 * r))
    w = window(c.g, box)
    uu, vv = c.g.u[:, w[1]], c.g.v[w[0]]
    patch = np.zeros((w[0].stop - w[0].start, w[1].stop - w[1].start), np.float32)
    for _ in range(5 + int(rng.integers(4))):
        bu, bv = cu + r * rng.normal(0, 0.55), cv + r * rng.normal(0, 0.55)
        br = r * (0.22 + 0.25 * rng.random())
        patch = np.maximum(patch, np.exp(-(((uu - bu) / br) ** 2 + ((vv - bv) / br) ** 2)))
    patch = patch * ramp(1.45 * r - np.sqrt((uu - cu) ** 2 + (vv - cv) ** 2), 0.1 * r)  # stays in its box
    _replace_air(c, w, patch * c.lung[w], level)
    return box


def paint_atelectasis(c: Canvas, rng, severity: float, level: float, side: int) -> Box:
    """Plate-like (discoid) bands at a base; the raised hemidiaphragm (volume loss) is applied
    by the renderer before the anatomy is drawn, so the box covers that hemidiaphragm too."""
    a = c.a
    boxes = []
    half_len = finding_extent("Atelectasis", severity, rng)
    for i in range(1 + int(severity > 0.6)):
        cu, cv = a.random_lung_point(rng, side, 0.6 * half_len, (0.6, 0.92) if i == 0 else (0.45, 0.7))
        th = 0.007 + 0.007 * severity + 0.003 * rng.random()
        ang = 0.4 * (rng.random() - 0.5)
        cs, sn = math.cos(ang), math.sin(ang)
        hl = half_len * (1.0 if i == 0 else 0.7)
        box = clip_box((cu - hl - th, cv - 0.45 * hl - th, cu + hl + th, cv + 0.45 * hl + th))
        w = window(c.g, box)
        du, dv = c.g.u[:, w[1]] - cu, c.g.v[w[0]] - cv
        along, across = du * cs + dv * sn, -du * sn + dv * cs
        band = ramp(th - np.abs(across), 0.005) * ramp(hl - np.abs(along), 0.03)
        _replace_air(c, w, band * c.lung[w], min(1.0, level))
        boxes.append(box)
    lb = a.lung_box(side)
    if side == 0:
        dia_box = (lb[0] - 0.01, a.dome[side] - 0.03, 0.5, a.dome[side] + a.depth + 0.08)
    else:
        dia_box = (0.5, a.dome[side] - 0.03, lb[2] + 0.01, a.dome[side] + a.depth + 0.08)
    return clip_box(union(boxes + [dia_box]))


def paint_pneumothorax(c: Canvas, rng, severity: float, level: float) -> Box:
    """Visceral pleural line with no lung markings (and darker air) between it and the chest wall."""
    a, g = c.a, c.g
    side = int(rng.integers(2))
    rim = finding_extent("Pneumothorax", severity, rng)
    reach = a.apex + (0.40 + 0.35 * severity) * (a.dome[side] - a.apex)  # how far down it extends
    if side == 0:
        box = clip_box((0.5 - a.tw - 0.01, a.apex - 0.01, 0.5 - a.med, reach + 0.03))
    else:
        box = clip_box((0.5 + a.med, a.apex - 0.01, 0.5 + a.tw + 0.01, reach + 0.03))
    w = window(g, box)
    vv, axw = g.v[w[0]], g.ax[:, w[1]]
    on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
    d = np.minimum(a.lateral_edge(vv) - axw, 1.3 * (vv - a.lung_top(axw)))
    fade = ramp(reach - vv, 0.06)
    edge = rim * fade
    lung = c.lung[w] * on_side
    ptx = ramp(edge - d, 0.004) * lung
    line = np.exp(-(((d - edge) / 0.006) ** 2)) * lung * fade
    collapsed = ramp(d - edge, 0.004) * ramp(edge + 0.03 - d, 0.03) * lung * fade  # denser collapsed lung
    c.markings[w] *= 1.0 - ptx
    c.extra[w] += -level * 0.10 * ptx + level * 0.10 * line + level * 0.05 * collapsed
    # the pleural line ends where the rim fades: trim the box to the affected part
    cols = np.nonzero((ptx + line).max(axis=0) > 0.05)[0]
    rows = np.nonzero((ptx + line).max(axis=1) > 0.05)[0]
    if cols.size and rows.size:
        s = g.size
        u1, u2 = (w[1].start + cols[0]) / s, (w[1].start + cols[-1] + 1) / s
        v2 = (w[0].start + rows[-1] + 1) / s
        box = (u1 - 0.01, box[1], u2 + 0.01, min(box[3], v2 + 0.01))
    return clip_box(box)


def paint_pleural_effusion(c: Canvas, rng, severity: float, level: float) -> Box:
    """Basal fluid with a meniscus climbing the lateral wall: the costophrenic angle is blunted."""
    a, g = c.a, c.g
    sides = [int(rng.integers(2))] if rng.random() < 0.6 else [0, 1]
    boxes = []
    for side in sides:
        h = finding_size("Pleural Effusion", rng)
        lb = a.lung_box(side)
        top = a.dome[side] - h * 1.3 - 0.02
        box = clip_box((lb[0] - 0.01, top, lb[2] + 0.01, a.dome[side] + a.depth + 0.02))
        w = window(g, box)
        uu, vv, axw = g.u[:, w[1]], g.v[w[0]], g.ax[:, w[1]]
        out = np.clip((axw - a.med) / (a.tw - a.med), 0.0, 1.0)
        surface = a.diaphragm(uu, axw) - h * (0.35 + 1.0 * out * out) - 0.01
        fluid = ramp(vv - surface, 0.02) * (0.75 + 0.25 * ramp(vv - surface - 0.5 * h, h + 1e-3))
        on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
        fluid = fluid * on_side * c.lung[w]
        c.extra[w] += level * c.air[w] * fluid * 1.05
        c.markings[w] *= 1.0 - fluid
        boxes.append(box)
    return union(boxes)


def paint_pleural_other(c: Canvas, rng, severity: float, level: float) -> Box:
    """Pleural thickening along the lateral chest wall: a lenticular soft-tissue band that
    pushes the lung edge in, with calcified plaque (bright, irregular) in half of them."""
    a, g = c.a, c.g
    side = int(rng.integers(2))
    hl = finding_size("Pleural Other", rng)
    cv = a.apex + 0.14 + (a.dome[side] - a.apex - 0.24) * rng.random()
    t0 = 0.016 + 0.020 * severity + 0.004 * rng.random()  # 6-15 mm thick
    calcified = rng.random() < 0.5
    lat = float(a.lateral_edge(cv))
    box = clip_box(
        (0.5 - lat - 0.02, cv - hl - 0.01, 0.5 - lat + t0 + 0.02, cv + hl + 0.01)
        if side == 0
        else (0.5 + lat - t0 - 0.02, cv - hl - 0.01, 0.5 + lat + 0.02, cv + hl + 0.01)
    )
    w = window(g, box)
    vv, axw = g.v[w[0]], g.ax[:, w[1]]
    on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
    thick = t0 * np.sqrt(np.clip(1.0 - ((vv - cv) / hl) ** 2, 0.0, 1.0))
    d = a.lateral_edge(vv) - axw
    plaque = ramp(thick - d, 0.004) * ramp(d + 0.012, 0.01) * on_side
    c.extra[w] += level * plaque
    c.markings[w] *= 1.0 - plaque
    if calcified:
        wobble = 0.5 + 0.5 * np.cos((vv - cv) * (2 * math.pi / 0.03) + 6.28 * rng.random())
        rim = np.exp(-(((d - 0.6 * thick) / 0.004) ** 2)) * (thick > 0.004) * on_side
        c.extra[w] += 0.6 * level * rim * wobble
    return box


def fracture_plan(a: Anatomy, rng, severity: float, level: float) -> dict:
    """Which posterior ribs break and how (the ribs draw it, in ``anatomy``): adjacent ribs
    broken along a line (1 rib when subtle, up to 3), a cortex gap, a step-off of part of a
    rib width, and a healing callus on the more severe ones."""
    side = int(rng.integers(2))
    n = 1 + int(severity > 0.4) + int(severity > 0.75)
    first = 2 + int(rng.integers(4))
    ax0 = 0.21 + (a.tw - 0.29) * rng.random()  # posterolateral, clear of the heart
    slope = 0.02 * (rng.random() - 0.5)
    ribs = [first + i for i in range(n)]
    axs = [ax0 + slope * i for i in range(n)]
    step_widths = finding_extent("Fracture", severity, rng)
    # callus in rib units (1 = a rib's own density; 5 = about a nodule's): the healing,
    # fusiform bump that makes most rib fractures visible on a film at all; labelled positives
    # (severity >= 0.45) nearly always have one
    callus = 8.0 * level if rng.random() < 0.3 + 0.7 * severity else 0.0
    centers = [a.rib_center(x, k, side) for x, k in zip(axs, ribs)]
    us = [0.5 - x if side == 0 else 0.5 + x for x in axs]
    box = clip_box(
        (min(us) - 0.05, min(centers) - 0.7 * a.rib_spacing, max(us) + 0.05, max(centers) + 1.2 * a.rib_spacing)
    )
    return {
        "side": side,
        "ribs": ribs,
        "ax": axs,
        "step": 0.4 * step_widths * min(1.0, level),  # in rib periods (a rib is ~0.4 of one)
        "depth": min(1.0, level),
        "gap": 0.010 + 0.006 * rng.random(),  # 4-6 mm of distraction (a displaced fracture)
        "callus": callus,
        "box": box,
    }


def paint_support_devices(c: Canvas, rng, severity: float, level: float) -> Box:
    """Endotracheal tube, central line, nasogastric tube, pacemaker with lead, ECG leads."""
    g, a = c.g, c.a
    s = g.size
    img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(img)
    lw = max(1, round(0.007 * s))

    def px(points):
        return [(float(x) * s, float(y) * s) for x, y in points]

    kinds = rng.random(5)
    chosen = [k < p for k, p in zip(kinds, (0.5, 0.6, 0.3, 0.15, 0.35))]
    if not any(chosen):
        chosen[int(rng.integers(5))] = True
    carina = a.heart_top - 0.02
    if chosen[0]:  # endotracheal tube, tip 3-7 cm above the carina
        x = 0.5 + 0.008 * (rng.random() - 0.5)
        tip = carina - 0.04 - 0.06 * rng.random()
        draw.line(px([(x, 0.0), (x, tip)]), fill=170, width=lw + 1)
        draw.line(px([(x + 0.004, 0.0), (x + 0.004, tip)]), fill=255, width=1)
    if chosen[1]:  # central venous line from a subclavian vein to the SVC
        side = -1 if rng.random() < 0.5 else 1
        x0 = 0.5 + side * (0.25 + 0.08 * rng.random())
        pts = [(x0, 0.13), (0.5 + side * 0.15, 0.17), (0.5 + side * 0.06, 0.20), (0.47, 0.24 + 0.08 * rng.random())]
        draw.line(px(pts), fill=220, width=lw, joint="curve")
    if chosen[2]:  # nasogastric tube down the midline into the stomach
        pts = [(0.49, 0.0), (0.49, 0.4), (0.5, a.dome[1]), (0.6 + 0.05 * rng.random(), a.dome[1] + 0.1)]
        draw.line(px(pts), fill=200, width=lw, joint="curve")
    if chosen[3]:  # pacemaker with a lead into the right ventricle
        bx, by = 0.72 + 0.06 * rng.random(), 0.14 + 0.05 * rng.random()
        draw.rounded_rectangle(px([(bx - 0.045, by - 0.03), (bx + 0.045, by + 0.03)]), radius=0.01 * s, fill=255)
        hu, hv, hw, _ = a.heart_geometry()
        draw.line(
            px([(bx - 0.03, by), (0.52, 0.28), (0.45, hv), (hu + 0.2 * hw, hv + 0.08)]),
            fill=230,
            width=lw,
            joint="curve",
        )
    if chosen[4]:  # ECG electrodes with their wires
        for _ in range(2 + int(rng.integers(3))):
            ex, ey = 0.15 + 0.7 * rng.random(), 0.15 + 0.5 * rng.random()
            r = 0.012 + 0.006 * rng.random()
            draw.ellipse(px([(ex - r, ey - r), (ex + r, ey + r)]), outline=255, width=lw)
            end = (0.0 if ex < 0.5 else 1.0, ey + 0.2 * (rng.random() - 0.5))
            draw.line(px([(ex, ey), ((ex + end[0]) / 2, ey + 0.05), end]), fill=140, width=1, joint="curve")
    bbox = img.getbbox()
    c.extra += np.asarray(img, dtype=np.float32) * (level / 255.0)
    x1, y1, x2, y2 = bbox if bbox else (0, 0, s, s)
    return clip_box((x1 / s - 0.005, y1 / s - 0.005, x2 / s + 0.005, y2 / s + 0.005))


# The painters ``render_phantom`` calls for every requested finding, in CHEXPERT_LABELS order.
# Atelectasis (whose side is chosen before the anatomy is drawn), Lung Opacity and the
# structural findings are handled by the renderer itself.
PAINTERS: dict[str, Painter] = {
    "Lung Lesion": paint_lung_lesion,
    "Edema": paint_edema,
    "Consolidation": paint_consolidation,
    "Pneumonia": paint_pneumonia,
    "Pneumothorax": paint_pneumothorax,
    "Pleural Effusion": paint_pleural_effusion,
    "Pleural Other": paint_pleural_other,
    "Support Devices": paint_support_devices,
}
