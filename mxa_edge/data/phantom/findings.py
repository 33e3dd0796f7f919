"""Findings: each painter draws one finding into the canvas and returns its canonical box.

A painter is ``painter(canvas, rng, level) -> Box``: ``rng`` is the finding's own child
stream and ``level`` its contrast (``specs.finding_level``). The structural findings
(Cardiomegaly, Enlarged Cardiomediastinum, Atelectasis's raised hemidiaphragm, Fracture)
change the anatomy before it is drawn, in ``render.render_phantom``; "Lung Opacity" alone is
painted by ``paint_lung_opacity`` only when no opacity source is present.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from mxa_edge.data.phantom.anatomy import Anatomy, Canvas
from mxa_edge.data.phantom.geometry import HILA, Box, clip_box, ramp, smooth_profile, union, window
from mxa_edge.data.phantom.specs import finding_size

Painter = Callable[[Canvas, np.random.Generator, float], Box]


def _blob_opacity(c: Canvas, cu: float, cv: float, ru: float, rv: float, level: float, edge: float) -> Box:
    """An elliptical opacity filling lung air (level = fraction of air replaced)."""
    box = clip_box((cu - ru, cv - rv, cu + ru, cv + rv))
    w = window(c.g, box)
    d2 = ((c.g.u[:, w[1]] - cu) / ru) ** 2 + ((c.g.v[w[0]] - cv) / rv) ** 2
    shape = np.clip((1.0 - d2) * (1.0 / edge), 0.0, 1.0)
    c.extra[w] += level * 0.3 * shape * c.lung[w]
    c.markings[w] *= 1.0 - 0.5 * shape
    return box


def paint_lung_opacity(c: Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = finding_size("Lung Opacity", rng)
    cu, cv = c.a.random_lung_point(rng, side, 0.3 * r)
    return _blob_opacity(c, cu, cv, r, r * (0.8 + 0.5 * rng.random()), level, 1.2)


def paint_lung_lesion(c: Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = finding_size("Lung Lesion", rng)
    cu, cv = c.a.random_lung_point(rng, side, r)
    box = clip_box((cu - 1.3 * r, cv - 1.3 * r, cu + 1.3 * r, cv + 1.3 * r))
    w = window(c.g, box)
    du, dv = c.g.u[:, w[1]] - cu, c.g.v[w[0]] - cv
    d = np.sqrt(du * du + dv * dv)
    lobes = 1.0 + 0.12 * np.cos(5.0 * np.arctan2(dv, du) + 6.28 * rng.random())
    solid = np.clip((r * lobes - d) / (0.25 * r + 1.0 / c.g.size), 0.0, 1.0)
    c.extra[w] += level * solid * (0.85 + 0.15 * np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1)))
    return box


def paint_edema(c: Canvas, rng, level: float) -> Box:
    boxes = []
    sx = finding_size("Edema", rng)
    for side, (hu, hv) in enumerate(HILA):
        cu, cv = hu + (-0.03 if side == 0 else 0.03), hv + 0.03 + 0.03 * rng.random()
        box = clip_box((cu - 2.0 * sx, cv - 2.2 * sx, cu + 2.0 * sx, cv + 2.2 * sx))
        w = window(c.g, box)
        haze = np.exp(-(((c.g.u[:, w[1]] - cu) / sx) ** 2) - ((c.g.v[w[0]] - cv) / (1.25 * sx)) ** 2)
        c.extra[w] += level * 0.3 * haze * c.lung[w]
        c.markings[w] *= 1.0 + 1.2 * level * haze  # indistinct, engorged vessels
        lb = c.a.lung_box(side)
        boxes.append((max(box[0], lb[0]), max(box[1], lb[1]), min(box[2], lb[2]), min(box[3], lb[3])))
    return union(boxes)


def paint_consolidation(c: Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = finding_size("Consolidation", rng)
    lower = rng.random() < 0.65
    cu, cv = c.a.random_lung_point(rng, side, 0.4 * r, (0.55, 0.9) if lower else (0.1, 0.45))
    ru, rv = r * (1.0 + 0.4 * rng.random()), r * (0.7 + 0.3 * rng.random())
    box = clip_box((cu - ru, cv - rv, cu + ru, cv + rv))
    w = window(c.g, box)
    g = c.g
    uu, vv = g.u[:, w[1]], g.v[w[0]]
    d2 = ((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2
    tilt = 0.3 * (rng.random() - 0.5)
    fissure = ramp((vv - (cv - 0.55 * rv + tilt * (uu - cu))) * (1 if lower else -1), 0.006)
    shape = np.clip((1.0 - d2) * 3.0, 0.0, 1.0) * fissure
    bronchi = smooth_profile(rng, 360, 9.0)[g.theta_bin[w]] * ramp(g.radius[w] - 0.05, 0.04)
    dense = shape * (1.0 - 0.55 * np.clip(bronchi * 2.5, 0.0, 1.0))
    c.extra[w] += level * 0.3 * dense * c.lung[w]
    c.markings[w] *= 1.0 - shape
    return box


def paint_pneumonia(c: Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = finding_size("Pneumonia", rng)
    cu, cv = c.a.random_lung_point(rng, side, 0.3 * r, (0.3, 0.95))
    box = clip_box((cu - 1.6 * r, cv - 1.6 * r, cu + 1.6 * r, cv + 1.6 * r))
    w = window(c.g, box)
    uu, vv = c.g.u[:, w[1]], c.g.v[w[0]]
    patch = np.zeros((w[0].stop - w[0].start, w[1].stop - w[1].start), np.float32)
    for _ in range(3 + int(rng.integers(4))):
        bu, bv = cu + r * rng.normal(0, 0.6), cv + r * rng.normal(0, 0.6)
        br = r * (0.25 + 0.35 * rng.random())
        patch = np.maximum(patch, np.exp(-(((uu - bu) / br) ** 2 + ((vv - bv) / br) ** 2)))
    c.extra[w] += level * 0.3 * patch * c.lung[w]
    c.markings[w] *= 1.0 - 0.6 * patch
    return box


def paint_atelectasis(c: Canvas, rng, level: float, side: int) -> Box:
    a = c.a
    half_len = finding_size("Atelectasis", rng)
    cu, cv = a.random_lung_point(rng, side, 0.5 * half_len, (0.6, 0.95))
    th = 0.006 + 0.01 * rng.random()
    ang = 0.35 * (rng.random() - 0.5)
    cs, sn = math.cos(ang), math.sin(ang)
    box = clip_box((cu - half_len - th, cv - 0.4 * half_len - th, cu + half_len + th, cv + 0.4 * half_len + th))
    w = window(c.g, box)
    du, dv = c.g.u[:, w[1]] - cu, c.g.v[w[0]] - cv
    along, across = du * cs + dv * sn, -du * sn + dv * cs
    band = ramp(th - np.abs(across), 0.006) * ramp(half_len - np.abs(along), 0.03)
    c.extra[w] += level * 0.3 * band * c.lung[w]
    lb = a.lung_box(side)
    dia_box = (lb[0], a.dome[side] - 0.03, lb[2], a.dome[side] + a.depth + 0.01)
    return union([box, dia_box])


def paint_pneumothorax(c: Canvas, rng, level: float) -> Box:
    a, g = c.a, c.g
    side = int(rng.integers(2))
    rim = finding_size("Pneumothorax", rng)
    reach = a.apex + (0.30 + 0.25 * rng.random()) * (a.dome[side] - a.apex)  # how far down it extends
    if side == 0:
        box = clip_box((0.5 - a.tw - 0.01, a.apex - 0.01, 0.5 - a.med, reach + 0.02))
    else:
        box = clip_box((0.5 + a.med, a.apex - 0.01, 0.5 + a.tw + 0.01, reach + 0.02))
    w = window(g, box)
    vv, axw = g.v[w[0]], g.ax[:, w[1]]
    d = np.minimum(a.lateral_edge(vv) - axw, 1.3 * (vv - a.lung_top(axw)))
    fade = ramp(reach - vv, 0.05)
    ptx = ramp(rim * fade - d, 0.006) * c.lung[w]
    line = np.exp(-(((d - rim * fade) / 0.0035) ** 2)) * c.lung[w] * fade
    c.markings[w] *= 1.0 - ptx
    c.extra[w] += -level * 0.08 * ptx + level * 0.10 * line
    # the pleural line ends where the rim fades: trim the box to the affected part
    cols = np.nonzero(ptx.max(axis=0) > 0.05)[0]
    if cols.size:
        s = g.size
        u1, u2 = (w[1].start + cols[0]) / s, (w[1].start + cols[-1] + 1) / s
        box = (u1 - 0.01, box[1], u2 + 0.01, box[3])
    return clip_box(box)


def paint_pleural_effusion(c: Canvas, rng, level: float) -> Box:
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


def paint_pleural_other(c: Canvas, rng, level: float) -> Box:
    a, g = c.a, c.g
    side = int(rng.integers(2))
    hl = finding_size("Pleural Other", rng)
    cv = a.apex + 0.12 + (a.dome[side] - a.apex - 0.2) * rng.random()
    t0 = 0.010 + 0.014 * rng.random()
    lat = float(a.lateral_edge(cv))
    box = clip_box(
        (
            (0.5 - lat - 0.015, cv - hl, 0.5 - lat + t0 + 0.03, cv + hl)
            if side == 0
            else (0.5 + lat - t0 - 0.03, cv - hl, 0.5 + lat + 0.015, cv + hl)
        )
    )
    w = window(g, box)
    vv, axw = g.v[w[0]], g.ax[:, w[1]]
    on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
    thick = t0 * np.sqrt(np.clip(1.0 - ((vv - cv) / hl) ** 2, 0.0, 1.0))
    d = a.lateral_edge(vv) - axw
    plaque = ramp(thick - d, 0.005) * ramp(d + 0.01, 0.01) * on_side
    c.extra[w] += level * plaque
    return box


def fracture_plan(a: Anatomy, rng, level: float) -> dict:
    """Where a rib breaks (side, rib, lateral position, step, gap depth, box); the ribs draw it."""
    side = int(rng.integers(2))
    rib = 3 + int(rng.integers(4))
    ax_b = 0.20 + (a.tw - 0.26) * rng.random()
    v_b = a.rib_center(ax_b, rib, side)
    u_b = 0.5 - ax_b if side == 0 else 0.5 + ax_b
    box = clip_box((u_b - 0.04, v_b - 0.6 * a.rib_spacing - 0.01, u_b + 0.04, v_b + 0.8 * a.rib_spacing + 0.01))
    return {
        "side": side,
        "rib": rib,
        "ax": ax_b,
        "step": finding_size("Fracture", rng) * min(1.0, level),
        "depth": min(1.0, level),
        "box": box,
    }


def paint_support_devices(c: Canvas, rng, level: float) -> Box:
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
    carina = a.heart_top - 0.05
    if chosen[0]:  # endotracheal tube, tip above the carina
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
    if chosen[3]:  # pacemaker with a lead into the heart
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
