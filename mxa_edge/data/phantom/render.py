"""Render one phantom: a frontal chest with the requested findings, or a crude lateral view.

Inside ``render_phantom`` the anatomy, each finding and the noise draw from separate child
streams, so adding one finding to an image leaves the rest of it unchanged (the tests rely
on this).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from mxa_edge.data.phantom.anatomy import anatomy_canvas, sample_anatomy
from mxa_edge.data.phantom.exposure import apply_framing, box_to_output, expose, framing
from mxa_edge.data.phantom.findings import PAINTERS, fracture_plan, paint_atelectasis, paint_lung_opacity
from mxa_edge.data.phantom.geometry import Box, clip_box, grid, lowres_noise, ramp, union
from mxa_edge.data.phantom.specs import DIFFICULTY, OPACITY_SOURCES, check_size_and_difficulty, finding_level
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError


def render_phantom(
    rng: np.random.Generator,
    size: int = 256,
    findings: Mapping[str, float] | None = None,
    *,
    difficulty: float = DIFFICULTY,
    view: str | None = None,
    female: bool | None = None,
) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
    """Render one frontal chest phantom.

    findings: finding name -> severity in (0, 1] (1 = textbook, ~0.3 = subtle, as drawn for
    uncertain labels). "Lung Opacity" alone draws a hazy opacity; with any opacity source
    (lesion, edema, consolidation, pneumonia, atelectasis) it only takes their union box.
    Returns the uint8 image (size, size) and boxes ``(label, x1, y1, x2, y2)`` in PIXELS of
    the returned image, one per requested finding, in CHEXPERT_LABELS order.
    view: "AP" (portable look, see ``anatomy`` and ``exposure``) or "PA"; None draws one.
    female: breast shadows; None draws it. (Both are drawn from the stream either way, so
    passing them changes nothing else.)
    """
    findings = dict(findings or {})
    unknown = sorted(set(findings) - set(CHEXPERT_LABELS))
    if unknown:
        raise ConfigError(f"unknown finding(s) {', '.join(unknown)}; expected names from CHEXPERT_LABELS")
    check_size_and_difficulty(size, difficulty)
    if view not in (None, "AP", "PA"):
        raise ConfigError(f"view must be 'AP' or 'PA' (or None to draw one), got {view!r}")
    # independent child streams: anatomy, framing/exposure, and one per finding
    seeds = rng.integers(0, 2**63 - 1, size=2 + len(CHEXPERT_LABELS))
    anat_rng, expo_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    frng = {label: np.random.default_rng(seeds[2 + i]) for i, label in enumerate(CHEXPERT_LABELS)}
    sev = {label: float(np.clip(s, 0.0, 1.0)) for label, s in findings.items()}
    lvl = {label: finding_level(label, s, difficulty) for label, s in sev.items()}

    g = grid(size)
    ap, is_female = bool(anat_rng.random() < 0.5), bool(anat_rng.random() < 0.45)
    ap = ap if view is None else view == "AP"
    is_female = is_female if female is None else bool(female)
    a = sample_anatomy(anat_rng, ap=ap, female=is_female)
    boxes: dict[str, Box] = {}
    # structural findings change the anatomy before it is drawn
    if "Cardiomegaly" in lvl:
        # the table holds target CTRs; difficulty shrinks their excess over a normal 0.47
        target = 0.47 + (lvl["Cardiomegaly"] * difficulty - 0.47) / difficulty
        a.ctr = max(a.ctr, target + 0.01 * frng["Cardiomegaly"].random() + (0.02 if a.ap else 0.0))
    if "Enlarged Cardiomediastinum" in lvl:
        a.med *= 1.0 + lvl["Enlarged Cardiomediastinum"]
    atelectasis_side = int(frng["Atelectasis"].integers(2))
    if "Atelectasis" in lvl:  # volume loss: the hemidiaphragm rises (2.5 cm at level 1)
        a.dome[atelectasis_side] -= 0.07 * min(1.0, lvl["Atelectasis"])
    fracture = fracture_plan(a, frng["Fracture"], sev["Fracture"], lvl["Fracture"]) if "Fracture" in lvl else None

    canvas, fixed = anatomy_canvas(g, a, anat_rng, fracture)

    if "Cardiomegaly" in lvl:
        hu, hv, hw, hh = a.heart_geometry()
        boxes["Cardiomegaly"] = clip_box((hu - hw - 0.01, a.heart_top - 0.02, hu + hw + 0.01, a.heart_bottom + 0.01))
    if "Enlarged Cardiomediastinum" in lvl:
        boxes["Enlarged Cardiomediastinum"] = clip_box(
            (0.5 - a.med - 0.03, a.apex - 0.06, 0.5 + a.med + 0.05, a.heart_top + 0.06)
        )
    if fracture is not None:
        boxes["Fracture"] = fracture["box"]
    for label in CHEXPERT_LABELS:
        if label not in lvl:
            continue
        if label in PAINTERS:
            boxes[label] = PAINTERS[label](canvas, frng[label], sev[label], lvl[label])
        elif label == "Atelectasis":
            boxes[label] = paint_atelectasis(canvas, frng[label], sev[label], lvl[label], atelectasis_side)
    if "Lung Opacity" in lvl:
        sources = [boxes[s] for s in OPACITY_SOURCES if s in boxes]
        if not sources:
            sources = [paint_lung_opacity(canvas, frng["Lung Opacity"], sev["Lung Opacity"], lvl["Lung Opacity"])]
        boxes["Lung Opacity"] = union(sources)
    if "No Finding" in lvl:
        boxes["No Finding"] = union([a.lung_box(0), a.lung_box(1)])

    density = fixed - canvas.air + canvas.markings + canvas.extra
    affine, forward = framing(expo_rng, size, a.ap)
    image = expose(expo_rng, apply_framing(density, affine, size), size, ap=a.ap)
    out = [(label, *box_to_output(boxes[label], forward, size)) for label in CHEXPERT_LABELS if label in boxes]
    return image, out


def render_lateral(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A crude lateral chest view (spine posterior, heart anterior); it exists to be filtered out."""
    g = grid(size)
    u, v = g.u, g.v
    front, back = 0.12 + 0.05 * rng.random(), 0.86 + 0.05 * rng.random()
    body = ramp(u - front, 0.02) * ramp(back - u, 0.02)
    dia = 0.66 + 0.05 * rng.random() + 0.25 * (u - 0.55) ** 2 - 0.08 * (u - 0.5)
    lung = ramp((0.34 - np.abs(u - 0.52)) * 1.0, 0.03) * ramp(v - 0.12, 0.05) * ramp(dia - v, 0.02)
    heart = np.clip(1.0 - (((u - 0.36) / 0.16) ** 2 + ((v - 0.58) / 0.16) ** 2), 0.0, 1.0) ** 0.5
    spine = ramp(0.05 - np.abs(u - (0.76 + 0.04 * v)), 0.01) * (0.75 + 0.25 * np.cos(v * (2 * math.pi / 0.06)))
    arms = ramp(0.28 - v, 0.1) * 0.12
    density = body * (0.52 + arms) - 0.22 * lung * (1.0 - 0.7 * heart) + 0.08 * heart + 0.13 * spine * body + 0.012
    density = density + 0.02 * lowres_noise(rng, size, 24) * lung
    affine, _ = framing(rng, size)
    return expose(rng, apply_framing(density, affine, size), size)
