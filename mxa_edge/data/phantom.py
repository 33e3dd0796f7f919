"""Procedural chest-radiograph phantoms written in CheXpert's layout: the embedded default dataset.

There is no real CheXpert in the toolkit. ``generate_phantom_dataset`` draws synthetic
FRONTAL chest X-rays ("phantoms", plus a share of crude lateral views) with the 14 CheXpert
findings, and writes them exactly as CheXpert-v1.0-small is laid out, so the ordinary
CheXpert reader (``mxa_edge.data.chexpert``) trains on them unchanged::

    <out_dir>/<root_name>/train.csv       Path,Sex,Age,Frontal/Lateral,AP/PA,<14 findings>
    <out_dir>/<root_name>/valid.csv       same header; only 0.0 / 1.0 (like CheXpert's valid)
    <out_dir>/<root_name>/boxes.csv       Path,label,x1,y1,x2,y2 (see below)
    <out_dir>/<root_name>/train/patient00001/study1/view1_frontal.jpg
    <out_dir>/<root_name>/train/patient00007/study1/view2_lateral.jpg
    <out_dir>/<root_name>/valid/patient02001/study1/view1_frontal.jpg

``Path`` is relative to the dataset root's PARENT (``CheXpert-phantom/train/...``), as in
CheXpert. Label cells are ``1.0`` (positive), ``-1.0`` (uncertain: rendered fainter),
``0.0`` (explicitly negative) or blank (not mentioned: most negatives in train).

``boxes.csv`` holds one ground-truth box per positive (incl. uncertain) finding of every
frontal image: ``x1,y1,x2,y2`` are NORMALISED to [0, 1] in the saved image (x to the right,
y down; multiply by the image width/height for pixels), after the image's rotation, shift
and zoom. A finding drawn in several places (bilateral effusion, several devices) has one
box, the union. ``No Finding``'s box is the whole lung field; ``Lung Opacity``'s is the
union of every opacity (its own haze, consolidation, pneumonia, edema, atelectasis, lesion).

Every image has its own generator, seeded from (seed, split, index) through
``np.random.SeedSequence``: output is byte-identical for a seed and images can be drawn in
any order or in parallel. Inside ``render_phantom`` the anatomy, each finding and the noise
draw from separate child streams, so adding one finding to an image leaves the rest of it
unchanged (the tests rely on this).

Appearance of each finding is tuned in one table, ``FINDINGS`` (contrast and size ranges,
label rates), and globally by ``difficulty`` (contrast divided by it: 2.0 = half as
conspicuous). Bump ``PHANTOM_VERSION`` whenever the output changes: caches key on it.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw

from mxa_edge.errors import ConfigError
from mxa_edge.labels import CHEXPERT_COLUMNS, CHEXPERT_LABELS

PHANTOM_VERSION = "1"

DIFFICULTY = 1.0  # default global difficulty: every finding's contrast is divided by it
JPEG_QUALITY = 92
MIN_SIZE = 64


@dataclass(frozen=True)
class FindingSpec:
    """How often a finding is labelled, and how it looks.

    prevalence: marginal share of train rows labelled positive or uncertain (the co-occurrence
        model in ``sample_labels`` is calibrated to roughly these values; rare findings are
        floored above CheXpert's rates so small datasets still have positives).
    uncertain: share of train positives written as -1.0 (rendered at low severity).
    explicit_negative: share of train negatives written 0.0 rather than blank.
    contrast: (faint, strong) magnitude at severity 0 and 1, before dividing by difficulty
        (density units, where lung air is about 0.3; for structural findings see the renderer).
    size: (small, large) extent in image fractions (meaning depends on the finding).
    """

    prevalence: float
    uncertain: float
    explicit_negative: float
    contrast: tuple[float, float]
    size: tuple[float, float]


FINDINGS: dict[str, FindingSpec] = {
    # No Finding is derived (no other positive); never uncertain, never written 0.0 in train.
    "No Finding": FindingSpec(0.10, 0.00, 0.00, (0.0, 0.0), (0.0, 0.0)),
    # contrast = extra mediastinal half-width as a fraction of the normal one
    "Enlarged Cardiomediastinum": FindingSpec(0.05, 0.15, 0.05, (0.15, 0.75), (0.0, 0.0)),
    # contrast = cardiothoracic ratio reached at severity 0 and 1 (normal ~0.45)
    "Cardiomegaly": FindingSpec(0.12, 0.10, 0.06, (0.53, 0.66), (0.0, 0.0)),
    # standalone hazy (ground-glass) opacity; size = blob radius
    "Lung Opacity": FindingSpec(0.47, 0.05, 0.05, (0.05, 0.20), (0.05, 0.11)),
    # nodule / mass; contrast in absolute density; size = radius
    "Lung Lesion": FindingSpec(0.05, 0.12, 0.03, (0.06, 0.16), (0.010, 0.040)),
    # bilateral perihilar haze; contrast as a fraction of lung air
    "Edema": FindingSpec(0.24, 0.15, 0.10, (0.15, 0.55), (0.09, 0.15)),
    # dense lobar opacity with air bronchograms; size = lobe half-extent
    "Consolidation": FindingSpec(0.07, 0.20, 0.15, (0.30, 0.85), (0.06, 0.12)),
    # patchy multifocal opacity; size = cluster radius
    "Pneumonia": FindingSpec(0.04, 0.25, 0.10, (0.20, 0.60), (0.05, 0.10)),
    # plate-like band + raised hemidiaphragm; size = band half-length
    "Atelectasis": FindingSpec(0.15, 0.30, 0.05, (0.25, 0.75), (0.04, 0.09)),
    # absent markings lateral to a pleural line; contrast = extra lucency; size = rim width
    "Pneumothorax": FindingSpec(0.09, 0.10, 0.30, (0.25, 0.80), (0.02, 0.07)),
    # basal meniscus blunting the costophrenic angle; size = fluid height
    "Pleural Effusion": FindingSpec(0.39, 0.12, 0.25, (0.40, 1.00), (0.025, 0.14)),
    # pleural thickening / plaque along the chest wall; size = half-length
    "Pleural Other": FindingSpec(0.03, 0.20, 0.02, (0.05, 0.14), (0.04, 0.10)),
    # rib discontinuity; contrast = depth of the gap (fraction of the rib), size = step (rib spacings)
    "Fracture": FindingSpec(0.05, 0.15, 0.03, (0.45, 1.00), (0.05, 0.30)),
    # tubes, lines, pacemaker, ECG leads; contrast in absolute density
    "Support Devices": FindingSpec(0.52, 0.01, 0.05, (0.20, 0.45), (0.0, 0.0)),
}

# Findings that are opacities: any of them positive makes Lung Opacity positive.
OPACITY_SOURCES: tuple[str, ...] = ("Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")

_PATHOLOGIES: tuple[str, ...] = CHEXPERT_LABELS[1:]  # everything but No Finding
_SPLITS = {"train": 0, "valid": 1}
_RENDER_ORDER = {label: i for i, label in enumerate(CHEXPERT_LABELS)}

Box = tuple[float, float, float, float]  # canonical (u1, v1, u2, v2) in [0, 1]


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def sample_labels(
    rng: np.random.Generator, *, split: str = "train", force: str | None = None
) -> dict[str, float | None]:
    """One CheXpert-like label row: finding -> 1.0, -1.0, 0.0 or None (blank).

    Co-occurrence comes from two latent states: heart failure (cardiomegaly, edema, effusion
    together) and infection (consolidation with pneumonia). Pneumothorax is likelier with
    support devices, atelectasis with effusion. ``force`` makes one finding positive (1.0);
    forcing "No Finding" clears every pathology. In ``split="valid"`` there are no uncertain
    and no blank cells, as in CheXpert's validation set.
    """
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(_SPLITS)}")
    if force is not None and force not in FINDINGS:
        raise ConfigError(f"unknown finding {force!r}; expected one of {', '.join(CHEXPERT_LABELS)}")
    u = rng.random(32)  # a fixed number of draws keeps rows comparable across code paths
    heart_failure = u[0] < 0.18
    infection = u[1] < 0.12
    devices = u[2] < FINDINGS["Support Devices"].prevalence
    effusion = u[3] < (0.70 if heart_failure else 0.32)
    pos = {
        "Enlarged Cardiomediastinum": u[4] < (0.10 if heart_failure else 0.04),
        "Cardiomegaly": u[5] < (0.45 if heart_failure else 0.05),
        "Edema": u[6] < (0.75 if heart_failure else 0.13),
        "Consolidation": u[7] < (0.40 if infection else 0.025),
        "Pneumonia": u[8] < (0.30 if infection else 0.006),
        "Atelectasis": u[9] < (0.20 if effusion else 0.12),
        "Pneumothorax": u[10] < (0.13 if devices else 0.047),
        "Pleural Effusion": effusion,
        "Pleural Other": u[11] < FINDINGS["Pleural Other"].prevalence,
        "Fracture": u[12] < FINDINGS["Fracture"].prevalence,
        "Lung Lesion": u[13] < FINDINGS["Lung Lesion"].prevalence,
        "Support Devices": devices,
        "Lung Opacity": u[14] < 0.07,  # standalone haze; opacity sources add to it below
    }
    if force == "No Finding":
        pos = dict.fromkeys(pos, False)
    elif force is not None:
        pos[force] = True
    train = split == "train"
    values: dict[str, float | None] = {}
    for j, label in enumerate(_PATHOLOGIES):
        spec = FINDINGS[label]
        if pos[label]:
            uncertain = train and label != force and u[15 + j] < spec.uncertain
            values[label] = -1.0 if uncertain else 1.0
        else:
            values[label] = 0.0 if (not train or u[15 + j] < spec.explicit_negative) else None
    sources = [values[s] for s in OPACITY_SOURCES if values[s] in (1.0, -1.0)]
    if sources and values["Lung Opacity"] != 1.0:
        values["Lung Opacity"] = 1.0 if 1.0 in sources else -1.0
    any_positive = any(values[label] in (1.0, -1.0) for label in _PATHOLOGIES)
    no_finding = 0.0 if not train else None
    return {"No Finding": no_finding if any_positive else 1.0, **values}


def severities_for(rng: np.random.Generator, labels: Mapping[str, float | None]) -> dict[str, float]:
    """Severity in (0, 1] to render for each positive (1.0) or uncertain (-1.0) label."""
    out = {}
    for label in CHEXPERT_LABELS:
        value = labels.get(label)
        draw = rng.random()
        if value == 1.0:
            out[label] = 0.45 + 0.55 * draw
        elif value == -1.0:
            out[label] = 0.10 + 0.35 * draw
    return out


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    size: int
    u: np.ndarray  # (1, S) canonical x in [0, 1]
    v: np.ndarray  # (S, 1) canonical y in [0, 1]
    ax: np.ndarray  # (1, S) |u - 0.5|
    left: np.ndarray  # (1, S) bool: image-left half = patient's right
    theta_bin: np.ndarray  # (S, S) int: angle around the nearer hilum, in 360 bins
    radius: np.ndarray  # (S, S) distance to the nearer hilum
    radial_mix: np.ndarray  # (S, S) 0 near the hilum -> 1 at the periphery


_HILA = ((0.39, 0.43), (0.61, 0.41))  # nominal hila (right lung = image left, left lung)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> _Grid:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = c[None, :], c[:, None]
    hu = np.where(u < 0.5, _HILA[0][0], _HILA[1][0]).astype(np.float32)
    hv = np.where(u < 0.5, _HILA[0][1], _HILA[1][1]).astype(np.float32)
    du, dv = u - hu, v - hv
    radius = np.sqrt(du * du + dv * dv).astype(np.float32)
    theta = np.arctan2(dv, du)
    theta_bin = ((theta + math.pi) * (180.0 / math.pi)).astype(np.int16) % 360
    radial_mix = np.clip(radius / 0.3, 0.0, 1.0).astype(np.float32)
    arrays = (u, v, np.abs(u - 0.5), u < 0.5, theta_bin, radius, radial_mix)
    for a in arrays:
        a.flags.writeable = False
    return _Grid(size, *arrays)


def _ramp(x, width: float):
    """Soft step 0 -> 1 across x = -width/2 .. width/2 (a cheap sigmoid)."""
    return np.clip(x * (1.0 / width) + 0.5, 0.0, 1.0)


def _window(g: _Grid, box: Box) -> tuple[slice, slice]:
    s = g.size
    r0, r1 = max(0, int(box[1] * s)), min(s, int(math.ceil(box[3] * s)) + 1)
    c0, c1 = max(0, int(box[0] * s)), min(s, int(math.ceil(box[2] * s)) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _clip_box(b: Box) -> Box:
    return (max(0.0, b[0]), max(0.0, b[1]), min(1.0, b[2]), min(1.0, b[3]))


def _smooth_profile(rng: np.random.Generator, n: int, sparsity: float) -> np.ndarray:
    """A circular 1-D profile of sparse smoothed spikes (vessel / bronchus directions)."""
    p = rng.random(n).astype(np.float32) ** sparsity
    return (0.25 * np.roll(p, 1) + 0.5 * p + 0.25 * np.roll(p, -1)).astype(np.float32)


def _lowres_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise (unit-ish std) made by upsampling a coarse random field."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BICUBIC))


# --------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------


@dataclass
class _Anatomy:
    tw: float  # lung lateral half-width (thorax) around u = 0.5
    apex: float  # v of the lung apices
    dome: list[float]  # v of the diaphragm dome top, [right (image left), left]
    depth: float  # how much lower the costophrenic angles are than the domes
    med: float  # upper mediastinum half-width
    ctr: float  # cardiothoracic ratio
    heart_top: float
    heart_bottom: float
    rib_spacing: float  # posterior rib period (v units)
    rib_curve: float  # how steeply posterior ribs fall laterally
    rib_offset: float  # left ribs' phase shift relative to the right, in periods
    ap: bool
    female: bool

    def rib_center(self, ax: float, rib: int, side: int) -> float:
        """v of posterior rib ``rib``'s centre line at lateral distance ``ax``."""
        shift = 0.0 if side == 0 else self.rib_offset * self.rib_spacing
        return self.apex - 0.06 + shift + (-0.12 * ax + self.rib_curve * ax * ax) + (rib + 0.5) * self.rib_spacing

    def lateral_edge(self, v):
        return self.tw * (0.42 + 0.58 * np.sqrt(np.clip((v - self.apex) / 0.32, 0.0, 1.0)))

    def lung_top(self, ax):
        return self.apex + 2.2 * (ax - 0.22) ** 2

    def diaphragm(self, u, ax):
        dome = np.where(u < 0.5, self.dome[0], self.dome[1])
        lateral = self.depth * np.clip((ax - 0.2) / 0.2, 0.0, 1.0) ** 2
        medial = 0.4 * self.depth * np.clip((0.2 - ax) / 0.14, 0.0, 1.0) ** 2
        return (dome + lateral + medial).astype(np.float32)

    def heart_geometry(self) -> tuple[float, float, float, float]:
        half_w = self.ctr * self.tw
        return (
            0.5 + 0.28 * half_w,
            0.5 * (self.heart_top + self.heart_bottom),
            half_w,
            0.5 * (self.heart_bottom - self.heart_top),
        )

    def lung_box(self, side: int) -> Box:
        lo_v = max(self.dome) + self.depth
        if side == 0:
            return (0.5 - self.tw, self.apex, 0.5 - self.med + 0.01, lo_v)
        return (0.5 + self.med - 0.01, self.apex, 0.5 + self.tw, lo_v)

    def random_lung_point(
        self, rng: np.random.Generator, side: int, margin: float, zone=(0.0, 1.0)
    ) -> tuple[float, float]:
        """A point inside lung ``side`` at least ``margin`` from its edges; zone is a v fraction range."""
        top, bottom = self.apex + 0.06, self.dome[side] - 0.01
        v = top + (bottom - top) * (zone[0] + (zone[1] - zone[0]) * rng.random())
        lo, hi = self.med + 0.02 + margin, float(self.lateral_edge(v)) - margin
        ax = lo + max(hi - lo, 0.0) * rng.random()
        return (0.5 - ax if side == 0 else 0.5 + ax), v


def _sample_anatomy(rng: np.random.Generator, ap: bool, female: bool) -> _Anatomy:
    dome_r = 0.62 + 0.05 * rng.random()
    apex = 0.11 + 0.04 * rng.random()
    ctr = float(np.clip(rng.normal(0.45, 0.03), 0.37, 0.51)) + (0.03 if ap else 0.0)
    return _Anatomy(
        tw=0.36 + 0.05 * rng.random(),
        apex=apex,
        dome=[dome_r, dome_r + 0.015 + 0.03 * rng.random()],
        depth=0.07 + 0.05 * rng.random(),
        med=0.055 + 0.015 * rng.random(),
        ctr=ctr,
        heart_top=0.40 + 0.04 * rng.random(),
        heart_bottom=dome_r + 0.04,
        rib_spacing=(dome_r - apex + 0.08) / (9.3 + 0.8 * rng.random()),
        rib_curve=1.0 + 0.4 * rng.random(),
        rib_offset=0.2 * (rng.random() - 0.5),
        ap=ap,
        female=female,
    )


@dataclass
class _Canvas:
    """Accumulators for one canonical image, filled by anatomy and then findings."""

    g: _Grid
    a: _Anatomy
    lung: np.ndarray  # soft lung mask [0, 1]
    air: np.ndarray  # air density subtracted inside the lungs (>= 0)
    markings: np.ndarray  # vascular markings inside the lungs (density)
    extra: np.ndarray  # density added by findings


def _ribs(g: _Grid, a: _Anatomy, rng: np.random.Generator, fracture: dict | None) -> np.ndarray:
    """Posterior (bright arcs) and anterior (faint) ribs, with an optional fracture."""
    sp = a.rib_spacing
    v0 = np.where(g.left, a.apex - 0.06, a.apex - 0.06 + a.rib_offset * sp).astype(np.float32)
    phase = (g.v - v0 - (-0.12 * g.ax + a.rib_curve * g.ax * g.ax)) * (1.0 / sp)
    gap = None
    if fracture is not None:
        side, k, ax_b, step, depth = (
            fracture["side"],
            fracture["rib"],
            fracture["ax"],
            fracture["step"],
            fracture["depth"],
        )
        w = _window(g, fracture["box"])
        ph = phase[w]
        on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
        near = np.abs(ph - (k + 0.5)) < 0.6
        beyond = g.ax[:, w[1]] > ax_b
        phase[w] = ph - step * (near & beyond & on_side)
        gw = 0.0045 + 0.003 * rng.random()
        gap = (w, 1.0 - depth * near * on_side * np.exp(-(((g.ax[:, w[1]] - ax_b) / gw) ** 2)))
    t = phase - np.floor(phase)
    post = np.clip((0.21 - np.abs(t - 0.5)) * 14.0, 0.0, 1.0)
    # cortical rim: edges of each band slightly brighter than its middle
    post = post * (0.8 + 0.2 * np.clip(np.abs(t - 0.5) * 6.0 - 0.3, 0.0, 1.0))
    if gap is not None:
        post[gap[0]] *= gap[1]
    lower = a.diaphragm(g.u, g.ax) + 0.03
    env = _ramp(a.tw + 0.035 - g.ax, 0.02) * _ramp(g.v - (a.apex - 0.03), 0.04) * _ramp(lower - g.v, 0.06)
    aphase = (g.v - (a.apex + 0.05) + 0.45 * g.ax) * (1.0 / (sp * 1.15))
    at = aphase - np.floor(aphase)
    ant = np.clip((0.18 - np.abs(at - 0.5)) * 10.0, 0.0, 1.0) * _ramp(g.ax - 0.16, 0.06)
    fade = 0.55 + 0.45 * _ramp(g.ax - 0.1, 0.1)  # ribs are hard to see over the mediastinum
    return (0.055 * post * fade + 0.014 * ant) * env


def _anatomy_canvas(
    g: _Grid, a: _Anatomy, rng: np.random.Generator, fracture: dict | None
) -> tuple[_Canvas, np.ndarray]:
    """The normal chest: returns the canvas and the fixed (non-lung) density."""
    u, v, ax = g.u, g.v, g.ax
    # body outline: neck, shoulders, chest wall
    neck, shoulder = 0.09 + 0.03 * rng.random(), 0.52 + 0.06 * rng.random()
    wall = a.tw + 0.08 + 0.06 * rng.random()
    half_body = neck + (shoulder - neck) * _ramp(v - 0.06 - 0.03 * rng.random(), 0.12)
    half_body = np.minimum(half_body, wall + 0.05 * v + 0.5 * np.clip(0.25 - v, 0, 1))
    body = _ramp(half_body - ax, 0.02)
    thick = np.sqrt(np.clip(1.0 - (ax / (half_body + 0.05)) ** 2, 0.0, 1.0))
    tissue = body * (0.36 + 0.12 * thick)
    dia = a.diaphragm(u, ax)
    tissue = tissue + body * 0.10 * _ramp(v - dia, 0.02)  # liver / abdomen
    if a.female:
        for side in (0, 1):
            cu = 0.5 + (-1 if side == 0 else 1) * (0.24 + 0.04 * rng.random())
            cv, r = 0.66 + 0.05 * rng.random(), 0.13 + 0.04 * rng.random()
            d2 = ((u - cu) / r) ** 2 + ((v - cv) / (0.8 * r)) ** 2
            tissue = tissue + 0.035 * _ramp(1.0 - d2, 0.6) * body
    # lungs
    lat = a.lateral_edge(v)
    med_half = a.med * np.where(v < a.heart_top, 1.0, 0.8).astype(np.float32)
    lung = (
        _ramp(lat - ax, 0.012)
        * _ramp(v - a.lung_top(ax), 0.015)
        * _ramp(dia - v, 0.012)
        * _ramp(ax - med_half - 0.008, 0.012)
    )
    # heart (its base shifted to the patient's left = image right)
    hu, hv, hw, hh = a.heart_geometry()
    du, dv = u - hu, v - (hv + 0.045)
    along, across = du * 0.92 - dv * 0.39, du * 0.39 + dv * 0.92  # long axis tilted toward the apex
    e2 = (along / hw) ** 2 + (across / (1.3 * hh)) ** 2
    heart = np.clip((1.0 - e2) * 4.0, 0.0, 1.0) * _ramp(dia + 0.01 - v, 0.02)
    # mediastinum and aortic knob
    mediast = _ramp(med_half - ax, 0.025) * _ramp(a.heart_top + 0.05 - v, 0.04)
    knob_u, knob_v = 0.5 + a.med + 0.01, a.heart_top - 0.09
    knob = np.clip(1.0 - (((u - knob_u) / 0.03) ** 2 + ((v - knob_v) / 0.03) ** 2), 0.0, 1.0)
    # spine (vertebral bodies) and trachea
    spine = _ramp(0.033 - ax, 0.01) * (0.75 + 0.25 * np.cos(v * (2 * math.pi / 0.06)))
    trachea = _ramp(0.017 - np.abs(u - 0.5 - 0.01 * (v - 0.2)), 0.008) * _ramp(a.heart_top - 0.08 - v, 0.03)
    # clavicles (top rows only) and humeral heads
    top = _window(g, (0.0, 0.0, 1.0, 0.35))
    vt = v[top[0]]
    cl_v = 0.19 + 0.02 * rng.random() - 0.28 * (ax - 0.05) + 0.5 * (ax - 0.2) ** 2
    clav = _ramp(0.011 - np.abs(vt - cl_v), 0.008) * _ramp(ax - 0.04, 0.01) * _ramp(0.36 - ax, 0.03)
    hum_v = 0.10 + 0.04 * rng.random()
    hum = np.clip(1.0 - (((ax - 0.5) / 0.08) ** 2 + ((vt - hum_v) / 0.09) ** 2), 0.0, 1.0) ** 0.5
    bones = _ribs(g, a, rng, fracture)
    bones[top] += 0.11 * clav + 0.10 * hum * body[top]
    # vascular markings radiating from the hila
    near, far = _smooth_profile(rng, 360, 3.0), _smooth_profile(rng, 360, 4.0)
    mix = g.radial_mix
    vessels = near[g.theta_bin] * (1.0 - mix) + far[g.theta_bin] * mix
    vessels = vessels * np.exp(-g.radius * (1.0 / (0.13 + 0.04 * rng.random())))
    vessels = vessels * (0.75 + 0.25 * np.clip(_lowres_noise(rng, g.size, 40), -1.0, 1.0))
    hilum = np.exp(-((g.radius * (1.0 / 0.05)) ** 2))
    markings = (0.20 * vessels + 0.08 * hilum) * lung
    air_profile = 0.20 + 0.07 * _ramp(v - a.apex - 0.06, 0.16) - 0.03 * _ramp(v - dia + 0.08, 0.12)
    air = air_profile * lung * (1.0 - 0.9 * heart)
    fixed = tissue + 0.10 * mediast + 0.05 * knob + 0.08 * heart + 0.03 * spine * body - 0.05 * trachea + bones
    fixed = fixed + 0.012  # scatter: air outside the body is not perfectly black
    canvas = _Canvas(
        g, a, lung, air.astype(np.float32), markings.astype(np.float32), np.zeros((g.size, g.size), np.float32)
    )
    return canvas, fixed.astype(np.float32)


# --------------------------------------------------------------------------------------
# Findings: each draws into the canvas and returns its canonical box
# --------------------------------------------------------------------------------------


def _level(label: str, severity: float, difficulty: float) -> float:
    lo, hi = FINDINGS[label].contrast
    return (lo + (hi - lo) * severity) / difficulty


def _size(label: str, rng: np.random.Generator) -> float:
    lo, hi = FINDINGS[label].size
    return lo + (hi - lo) * rng.random()


def _blob_opacity(c: _Canvas, cu: float, cv: float, ru: float, rv: float, level: float, edge: float) -> Box:
    """An elliptical opacity filling lung air (level = fraction of air replaced)."""
    box = _clip_box((cu - ru, cv - rv, cu + ru, cv + rv))
    w = _window(c.g, box)
    d2 = ((c.g.u[:, w[1]] - cu) / ru) ** 2 + ((c.g.v[w[0]] - cv) / rv) ** 2
    shape = np.clip((1.0 - d2) * (1.0 / edge), 0.0, 1.0)
    c.extra[w] += level * 0.3 * shape * c.lung[w]
    c.markings[w] *= 1.0 - 0.5 * shape
    return box


def _fx_lung_opacity(c: _Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = _size("Lung Opacity", rng)
    cu, cv = c.a.random_lung_point(rng, side, 0.3 * r)
    return _blob_opacity(c, cu, cv, r, r * (0.8 + 0.5 * rng.random()), level, 1.2)


def _fx_lung_lesion(c: _Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = _size("Lung Lesion", rng)
    cu, cv = c.a.random_lung_point(rng, side, r)
    box = _clip_box((cu - 1.3 * r, cv - 1.3 * r, cu + 1.3 * r, cv + 1.3 * r))
    w = _window(c.g, box)
    du, dv = c.g.u[:, w[1]] - cu, c.g.v[w[0]] - cv
    d = np.sqrt(du * du + dv * dv)
    lobes = 1.0 + 0.12 * np.cos(5.0 * np.arctan2(dv, du) + 6.28 * rng.random())
    solid = np.clip((r * lobes - d) / (0.25 * r + 1.0 / c.g.size), 0.0, 1.0)
    c.extra[w] += level * solid * (0.85 + 0.15 * np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1)))
    return box


def _fx_edema(c: _Canvas, rng, level: float) -> Box:
    boxes = []
    sx = _size("Edema", rng)
    for side, (hu, hv) in enumerate(_HILA):
        cu, cv = hu + (-0.03 if side == 0 else 0.03), hv + 0.03 + 0.03 * rng.random()
        box = _clip_box((cu - 2.0 * sx, cv - 2.2 * sx, cu + 2.0 * sx, cv + 2.2 * sx))
        w = _window(c.g, box)
        haze = np.exp(-(((c.g.u[:, w[1]] - cu) / sx) ** 2) - ((c.g.v[w[0]] - cv) / (1.25 * sx)) ** 2)
        c.extra[w] += level * 0.3 * haze * c.lung[w]
        c.markings[w] *= 1.0 + 1.2 * level * haze  # indistinct, engorged vessels
        lb = c.a.lung_box(side)
        boxes.append((max(box[0], lb[0]), max(box[1], lb[1]), min(box[2], lb[2]), min(box[3], lb[3])))
    return _union(boxes)


def _fx_consolidation(c: _Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = _size("Consolidation", rng)
    lower = rng.random() < 0.65
    cu, cv = c.a.random_lung_point(rng, side, 0.4 * r, (0.55, 0.9) if lower else (0.1, 0.45))
    ru, rv = r * (1.0 + 0.4 * rng.random()), r * (0.7 + 0.3 * rng.random())
    box = _clip_box((cu - ru, cv - rv, cu + ru, cv + rv))
    w = _window(c.g, box)
    g = c.g
    uu, vv = g.u[:, w[1]], g.v[w[0]]
    d2 = ((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2
    tilt = 0.3 * (rng.random() - 0.5)
    fissure = _ramp((vv - (cv - 0.55 * rv + tilt * (uu - cu))) * (1 if lower else -1), 0.006)
    shape = np.clip((1.0 - d2) * 3.0, 0.0, 1.0) * fissure
    bronchi = _smooth_profile(rng, 360, 9.0)[g.theta_bin[w]] * _ramp(g.radius[w] - 0.05, 0.04)
    dense = shape * (1.0 - 0.55 * np.clip(bronchi * 2.5, 0.0, 1.0))
    c.extra[w] += level * 0.3 * dense * c.lung[w]
    c.markings[w] *= 1.0 - shape
    return box


def _fx_pneumonia(c: _Canvas, rng, level: float) -> Box:
    side = int(rng.integers(2))
    r = _size("Pneumonia", rng)
    cu, cv = c.a.random_lung_point(rng, side, 0.3 * r, (0.3, 0.95))
    box = _clip_box((cu - 1.6 * r, cv - 1.6 * r, cu + 1.6 * r, cv + 1.6 * r))
    w = _window(c.g, box)
    uu, vv = c.g.u[:, w[1]], c.g.v[w[0]]
    patch = np.zeros((w[0].stop - w[0].start, w[1].stop - w[1].start), np.float32)
    for _ in range(3 + int(rng.integers(4))):
        bu, bv = cu + r * rng.normal(0, 0.6), cv + r * rng.normal(0, 0.6)
        br = r * (0.25 + 0.35 * rng.random())
        patch = np.maximum(patch, np.exp(-(((uu - bu) / br) ** 2 + ((vv - bv) / br) ** 2)))
    c.extra[w] += level * 0.3 * patch * c.lung[w]
    c.markings[w] *= 1.0 - 0.6 * patch
    return box


def _fx_atelectasis(c: _Canvas, rng, level: float, side: int) -> Box:
    a = c.a
    half_len = _size("Atelectasis", rng)
    cu, cv = a.random_lung_point(rng, side, 0.5 * half_len, (0.6, 0.95))
    th = 0.006 + 0.01 * rng.random()
    ang = 0.35 * (rng.random() - 0.5)
    cs, sn = math.cos(ang), math.sin(ang)
    box = _clip_box((cu - half_len - th, cv - 0.4 * half_len - th, cu + half_len + th, cv + 0.4 * half_len + th))
    w = _window(c.g, box)
    du, dv = c.g.u[:, w[1]] - cu, c.g.v[w[0]] - cv
    along, across = du * cs + dv * sn, -du * sn + dv * cs
    band = _ramp(th - np.abs(across), 0.006) * _ramp(half_len - np.abs(along), 0.03)
    c.extra[w] += level * 0.3 * band * c.lung[w]
    lb = a.lung_box(side)
    dia_box = (lb[0], a.dome[side] - 0.03, lb[2], a.dome[side] + a.depth + 0.01)
    return _union([box, dia_box])


def _fx_pneumothorax(c: _Canvas, rng, level: float) -> Box:
    a, g = c.a, c.g
    side = int(rng.integers(2))
    rim = _size("Pneumothorax", rng)
    reach = a.apex + (0.30 + 0.25 * rng.random()) * (a.dome[side] - a.apex)  # how far down it extends
    if side == 0:
        box = _clip_box((0.5 - a.tw - 0.01, a.apex - 0.01, 0.5 - a.med, reach + 0.02))
    else:
        box = _clip_box((0.5 + a.med, a.apex - 0.01, 0.5 + a.tw + 0.01, reach + 0.02))
    w = _window(g, box)
    vv, axw = g.v[w[0]], g.ax[:, w[1]]
    d = np.minimum(a.lateral_edge(vv) - axw, 1.3 * (vv - a.lung_top(axw)))
    fade = _ramp(reach - vv, 0.05)
    ptx = _ramp(rim * fade - d, 0.006) * c.lung[w]
    line = np.exp(-(((d - rim * fade) / 0.0035) ** 2)) * c.lung[w] * fade
    c.markings[w] *= 1.0 - ptx
    c.extra[w] += -level * 0.08 * ptx + level * 0.10 * line
    # the pleural line ends where the rim fades: trim the box to the affected part
    cols = np.nonzero(ptx.max(axis=0) > 0.05)[0]
    if cols.size:
        s = g.size
        u1, u2 = (w[1].start + cols[0]) / s, (w[1].start + cols[-1] + 1) / s
        box = (u1 - 0.01, box[1], u2 + 0.01, box[3])
    return _clip_box(box)


def _fx_effusion(c: _Canvas, rng, level: float) -> Box:
    a, g = c.a, c.g
    sides = [int(rng.integers(2))] if rng.random() < 0.6 else [0, 1]
    boxes = []
    for side in sides:
        h = _size("Pleural Effusion", rng)
        lb = a.lung_box(side)
        top = a.dome[side] - h * 1.3 - 0.02
        box = _clip_box((lb[0] - 0.01, top, lb[2] + 0.01, a.dome[side] + a.depth + 0.02))
        w = _window(g, box)
        uu, vv, axw = g.u[:, w[1]], g.v[w[0]], g.ax[:, w[1]]
        out = np.clip((axw - a.med) / (a.tw - a.med), 0.0, 1.0)
        surface = a.diaphragm(uu, axw) - h * (0.35 + 1.0 * out * out) - 0.01
        fluid = _ramp(vv - surface, 0.02) * (0.75 + 0.25 * _ramp(vv - surface - 0.5 * h, h + 1e-3))
        on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
        fluid = fluid * on_side * c.lung[w]
        c.extra[w] += level * c.air[w] * fluid * 1.05
        c.markings[w] *= 1.0 - fluid
        boxes.append(box)
    return _union(boxes)


def _fx_pleural_other(c: _Canvas, rng, level: float) -> Box:
    a, g = c.a, c.g
    side = int(rng.integers(2))
    hl = _size("Pleural Other", rng)
    cv = a.apex + 0.12 + (a.dome[side] - a.apex - 0.2) * rng.random()
    t0 = 0.010 + 0.014 * rng.random()
    lat = float(a.lateral_edge(cv))
    box = _clip_box(
        (
            (0.5 - lat - 0.015, cv - hl, 0.5 - lat + t0 + 0.03, cv + hl)
            if side == 0
            else (0.5 + lat - t0 - 0.03, cv - hl, 0.5 + lat + 0.015, cv + hl)
        )
    )
    w = _window(g, box)
    vv, axw = g.v[w[0]], g.ax[:, w[1]]
    on_side = g.left[:, w[1]] if side == 0 else ~g.left[:, w[1]]
    thick = t0 * np.sqrt(np.clip(1.0 - ((vv - cv) / hl) ** 2, 0.0, 1.0))
    d = a.lateral_edge(vv) - axw
    plaque = _ramp(thick - d, 0.005) * _ramp(d + 0.01, 0.01) * on_side
    c.extra[w] += level * plaque
    return box


def _fracture_plan(a: _Anatomy, rng, level: float) -> dict:
    side = int(rng.integers(2))
    rib = 3 + int(rng.integers(4))
    ax_b = 0.20 + (a.tw - 0.26) * rng.random()
    v_b = a.rib_center(ax_b, rib, side)
    u_b = 0.5 - ax_b if side == 0 else 0.5 + ax_b
    box = _clip_box((u_b - 0.04, v_b - 0.6 * a.rib_spacing - 0.01, u_b + 0.04, v_b + 0.8 * a.rib_spacing + 0.01))
    return {
        "side": side,
        "rib": rib,
        "ax": ax_b,
        "step": _size("Fracture", rng) * min(1.0, level),
        "depth": min(1.0, level),
        "box": box,
    }


def _fx_devices(c: _Canvas, rng, level: float) -> Box:
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
    return _clip_box((x1 / s - 0.005, y1 / s - 0.005, x2 / s + 0.005, y2 / s + 0.005))


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _framing(rng: np.random.Generator, size: int) -> tuple[tuple[float, ...], np.ndarray]:
    """PIL affine data (output -> canonical pixel) and its 2x3 inverse (canonical -> output)."""
    angle = math.radians(rng.uniform(-5.0, 5.0))
    scale = rng.uniform(0.94, 1.12)  # > 1 zooms out (more of the patient in frame)
    tx, ty = rng.uniform(-0.04, 0.04) * size, rng.uniform(-0.05, 0.03) * size
    ca, sa = scale * math.cos(angle), scale * math.sin(angle)
    cx = cy = size / 2.0
    a, b, d, e = ca, -sa, sa, ca
    c_, f = cx + tx - a * cx - b * cy, cy + ty - d * cx - e * cy
    m = np.array([[a, b], [d, e]])
    inv = np.linalg.inv(m)
    forward = np.hstack([inv, (-inv @ np.array([c_, f]))[:, None]])
    return (a, b, c_, d, e, f), forward


def _box_to_output(box: Box, forward: np.ndarray, size: int) -> tuple[float, float, float, float]:
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


def _expose(rng: np.random.Generator, density: np.ndarray, size: int, noise: np.ndarray | None = None) -> np.ndarray:
    """Density -> 8-bit detector image: blur, exposure/contrast/gamma, heel effect, quantum noise."""
    blur = (0.5 + 0.5 * rng.random()) * size / 256.0
    gain, bias, gamma = rng.uniform(1.15, 1.45), rng.uniform(-0.08, 0.02), rng.uniform(0.8, 1.25)
    sigma = rng.uniform(0.015, 0.04)
    heel = rng.uniform(-0.08, 0.08)
    img = _blur(density, blur)
    img = np.clip(img * gain + bias, 0.0, 1.0) ** gamma
    img = img * (1.0 + heel * (_grid(size).v - 0.5))
    n = rng.standard_normal((size, size), dtype=np.float32) if noise is None else noise
    img = img + sigma * np.sqrt(img + 0.02) * n
    return np.clip(img * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def render_phantom(
    rng: np.random.Generator,
    size: int = 256,
    findings: Mapping[str, float] | None = None,
    *,
    difficulty: float = DIFFICULTY,
) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
    """Render one frontal chest phantom.

    findings: finding name -> severity in (0, 1] (1 = textbook, ~0.3 = subtle, as drawn for
    uncertain labels). "Lung Opacity" alone draws a hazy opacity; with any opacity source
    (lesion, edema, consolidation, pneumonia, atelectasis) it only takes their union box.
    Returns the uint8 image (size, size) and boxes ``(label, x1, y1, x2, y2)`` in PIXELS of
    the returned image, one per requested finding, in CHEXPERT_LABELS order.
    """
    findings = dict(findings or {})
    unknown = sorted(set(findings) - set(CHEXPERT_LABELS))
    if unknown:
        raise ConfigError(f"unknown finding(s) {', '.join(unknown)}; expected names from CHEXPERT_LABELS")
    if size < MIN_SIZE:
        raise ConfigError(f"phantom size {size} is too small; use at least {MIN_SIZE} pixels")
    if difficulty <= 0:
        raise ConfigError(f"difficulty must be positive, got {difficulty}")
    # independent child streams: anatomy, framing/exposure, and one per finding
    seeds = rng.integers(0, 2**63 - 1, size=2 + len(CHEXPERT_LABELS))
    anat_rng, expo_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    frng = {label: np.random.default_rng(seeds[2 + i]) for i, label in enumerate(CHEXPERT_LABELS)}
    lvl = {label: _level(label, float(np.clip(sev, 0.0, 1.0)), difficulty) for label, sev in findings.items()}

    g = _grid(size)
    a = _sample_anatomy(anat_rng, ap=bool(anat_rng.random() < 0.5), female=bool(anat_rng.random() < 0.45))
    boxes: dict[str, Box] = {}
    # structural findings change the anatomy before it is drawn
    if "Cardiomegaly" in lvl:
        # the table holds target CTRs; difficulty shrinks their excess over a normal 0.47
        target = 0.47 + (lvl["Cardiomegaly"] * difficulty - 0.47) / difficulty
        a.ctr = max(a.ctr, target + 0.01 * frng["Cardiomegaly"].random())
    if "Enlarged Cardiomediastinum" in lvl:
        a.med *= 1.0 + lvl["Enlarged Cardiomediastinum"]
    atelectasis_side = int(frng["Atelectasis"].integers(2))
    if "Atelectasis" in lvl:
        a.dome[atelectasis_side] -= 0.06 * lvl["Atelectasis"]
    fracture = _fracture_plan(a, frng["Fracture"], lvl["Fracture"]) if "Fracture" in lvl else None

    canvas, fixed = _anatomy_canvas(g, a, anat_rng, fracture)
    mottle = _lowres_noise(anat_rng, size, 20)  # anatomical "noise" that findings must beat

    if "Cardiomegaly" in lvl:
        hu, hv, hw, hh = a.heart_geometry()
        boxes["Cardiomegaly"] = _clip_box((hu - hw, hv - hh, hu + hw, a.heart_bottom))
    if "Enlarged Cardiomediastinum" in lvl:
        boxes["Enlarged Cardiomediastinum"] = _clip_box(
            (0.5 - a.med - 0.03, a.apex - 0.03, 0.5 + a.med + 0.05, a.heart_top + 0.06)
        )
    if fracture is not None:
        boxes["Fracture"] = fracture["box"]
    renderers = {
        "Lung Lesion": _fx_lung_lesion,
        "Edema": _fx_edema,
        "Consolidation": _fx_consolidation,
        "Pneumonia": _fx_pneumonia,
        "Pneumothorax": _fx_pneumothorax,
        "Pleural Effusion": _fx_effusion,
        "Pleural Other": _fx_pleural_other,
        "Support Devices": _fx_devices,
    }
    for label in CHEXPERT_LABELS:
        if label not in lvl:
            continue
        if label in renderers:
            boxes[label] = renderers[label](canvas, frng[label], lvl[label])
        elif label == "Atelectasis":
            boxes[label] = _fx_atelectasis(canvas, frng[label], lvl[label], atelectasis_side)
    if "Lung Opacity" in lvl:
        sources = [boxes[s] for s in OPACITY_SOURCES if s in boxes]
        if not sources:
            sources = [_fx_lung_opacity(canvas, frng["Lung Opacity"], lvl["Lung Opacity"])]
        boxes["Lung Opacity"] = _union(sources)
    if "No Finding" in lvl:
        boxes["No Finding"] = _union([a.lung_box(0), a.lung_box(1)])

    density = fixed - canvas.air + canvas.markings + canvas.extra + 0.012 * mottle * canvas.lung
    affine, forward = _framing(expo_rng, size)
    framed = Image.fromarray(density.astype(np.float32), "F").transform(
        (size, size), Image.AFFINE, affine, resample=Image.BILINEAR, fillcolor=0.0
    )
    image = _expose(expo_rng, np.asarray(framed), size)
    out = [(label, *_box_to_output(boxes[label], forward, size)) for label in CHEXPERT_LABELS if label in boxes]
    return image, out


def render_lateral(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A crude lateral chest view (spine posterior, heart anterior); it exists to be filtered out."""
    g = _grid(size)
    u, v = g.u, g.v
    front, back = 0.12 + 0.05 * rng.random(), 0.86 + 0.05 * rng.random()
    body = _ramp(u - front, 0.02) * _ramp(back - u, 0.02)
    dia = 0.66 + 0.05 * rng.random() + 0.25 * (u - 0.55) ** 2 - 0.08 * (u - 0.5)
    lung = _ramp((0.34 - np.abs(u - 0.52)) * 1.0, 0.03) * _ramp(v - 0.12, 0.05) * _ramp(dia - v, 0.02)
    heart = np.clip(1.0 - (((u - 0.36) / 0.16) ** 2 + ((v - 0.58) / 0.16) ** 2), 0.0, 1.0) ** 0.5
    spine = _ramp(0.05 - np.abs(u - (0.76 + 0.04 * v)), 0.01) * (0.75 + 0.25 * np.cos(v * (2 * math.pi / 0.06)))
    arms = _ramp(0.28 - v, 0.1) * 0.12
    density = body * (0.52 + arms) - 0.22 * lung * (1.0 - 0.7 * heart) + 0.08 * heart + 0.13 * spine * body + 0.012
    density = density + 0.02 * _lowres_noise(rng, size, 24) * lung
    affine, _ = _framing(rng, size)
    framed = Image.fromarray(density.astype(np.float32), "F").transform(
        (size, size), Image.AFFINE, affine, resample=Image.BILINEAR, fillcolor=0.0
    )
    return _expose(rng, np.asarray(framed), size)


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomRecord:
    """One generated CSV row, its image (JPEG bytes) and its normalised boxes."""

    row: tuple[str, ...]
    jpeg: bytes
    boxes: tuple[tuple[str, float, float, float, float], ...]

    @property
    def path(self) -> str:
        return self.row[0]


def _forced_label(index: int) -> str | None:
    """The first rows of each split cycle through every finding twice, so none is missing."""
    return CHEXPERT_LABELS[index % len(CHEXPERT_LABELS)] if index < 2 * len(CHEXPERT_LABELS) else None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def make_record(
    seed: int,
    split: str,
    index: int,
    *,
    size: int = 256,
    root_name: str = "CheXpert-phantom",
    patient_offset: int = 0,
    difficulty: float = DIFFICULTY,
) -> PhantomRecord:
    """Generate row ``index`` of ``split`` on its own: same arguments, same bytes."""
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(_SPLITS)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLITS[split], int(index)]))
    force = _forced_label(index)
    labels = sample_labels(rng, split=split, force=force)
    lateral = force is None and rng.random() < 0.10
    has_devices = labels["Support Devices"] in (1.0, -1.0)
    sex = "Female" if rng.random() < 0.45 else "Male"
    age = int(rng.integers(18, 91))
    ap = "AP" if rng.random() < (0.85 if has_devices else 0.45) else "PA"
    severities = severities_for(rng, labels)
    image_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
    folder = f"{root_name}/{split}/patient{patient_offset + index + 1:05d}/study1"
    if lateral:
        image, boxes, rel = render_lateral(image_rng, size), [], f"{folder}/view2_lateral.jpg"
        view, ap = "Lateral", ""
    else:
        image, pixel_boxes = render_phantom(image_rng, size, severities, difficulty=difficulty)
        boxes = [(label, x1 / size, y1 / size, x2 / size, y2 / size) for label, x1, y1, x2, y2 in pixel_boxes]
        rel, view = f"{folder}/view1_frontal.jpg", "Frontal"
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, format="JPEG", quality=JPEG_QUALITY)
    row = (rel, sex, str(age), view, ap, *(_cell(labels[label]) for label in CHEXPERT_LABELS))
    return PhantomRecord(row, buf.getvalue(), tuple(boxes))


def _write_csv_atomic(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def generate_phantom_dataset(
    out_dir,
    *,
    n_train: int = 2000,
    n_valid: int = 400,
    size: int = 256,
    seed: int = 0,
    root_name: str = "CheXpert-phantom",
    progress: Callable[[int, int], None] | None = None,
    difficulty: float = DIFFICULTY,
) -> Path:
    """Write a phantom CheXpert dataset under ``out_dir/root_name`` and return that root.

    Train patients are numbered from 1, valid patients after them (as in CheXpert). The
    first 28 rows of each split cycle through every finding (forced positive, frontal), so
    even tiny datasets have a positive of each. CSVs are written last and atomically: a
    root with train.csv is complete.
    """
    if n_train < 0 or n_valid < 0 or n_train + n_valid == 0:
        raise ConfigError(f"need a positive number of images (got n_train={n_train}, n_valid={n_valid})")
    if size < MIN_SIZE:
        raise ConfigError(f"phantom size {size} is too small; use at least {MIN_SIZE} pixels")
    if difficulty <= 0:
        raise ConfigError(f"difficulty must be positive, got {difficulty}")
    if not root_name or "/" in root_name or "\\" in root_name or "," in root_name:
        raise ConfigError(f"root_name {root_name!r} must be one plain folder name (no slashes or commas)")
    root = Path(out_dir).expanduser() / root_name
    root.mkdir(parents=True, exist_ok=True)
    total, done = n_train + n_valid, 0
    rows: dict[str, list[tuple[str, ...]]] = {"train": [], "valid": []}
    box_rows: list[tuple[str, ...]] = []
    for split, count, offset in (("train", n_train, 0), ("valid", n_valid, n_train)):
        for index in range(count):
            rec = make_record(
                seed, split, index, size=size, root_name=root_name, patient_offset=offset, difficulty=difficulty
            )
            target = root.parent / rec.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(rec.jpeg)
            rows[split].append(rec.row)
            box_rows.extend((rec.path, label, *(f"{x:.4f}" for x in xy)) for label, *xy in rec.boxes)
            done += 1
            if progress is not None:
                progress(done, total)
    _write_csv_atomic(root / "boxes.csv", ("Path", "label", "x1", "y1", "x2", "y2"), box_rows)
    _write_csv_atomic(root / "valid.csv", CHEXPERT_COLUMNS, rows["valid"])
    _write_csv_atomic(root / "train.csv", CHEXPERT_COLUMNS, rows["train"])
    return root
