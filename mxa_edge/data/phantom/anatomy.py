"""The normal chest: anatomy parameters, ribs, and the canvas findings paint into."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mxa_edge.data.phantom.geometry import Box, Grid, lowres_noise, ramp, smooth_profile, window


@dataclass
class Anatomy:
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


def sample_anatomy(rng: np.random.Generator, ap: bool, female: bool) -> Anatomy:
    dome_r = 0.62 + 0.05 * rng.random()
    apex = 0.11 + 0.04 * rng.random()
    ctr = float(np.clip(rng.normal(0.45, 0.03), 0.37, 0.51)) + (0.03 if ap else 0.0)
    return Anatomy(
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
class Canvas:
    """Accumulators for one canonical image, filled by anatomy and then findings."""

    g: Grid
    a: Anatomy
    lung: np.ndarray  # soft lung mask [0, 1]
    air: np.ndarray  # air density subtracted inside the lungs (>= 0)
    markings: np.ndarray  # vascular markings inside the lungs (density)
    extra: np.ndarray  # density added by findings


def _ribs(g: Grid, a: Anatomy, rng: np.random.Generator, fracture: dict | None) -> np.ndarray:
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
        w = window(g, fracture["box"])
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
    env = ramp(a.tw + 0.035 - g.ax, 0.02) * ramp(g.v - (a.apex - 0.03), 0.04) * ramp(lower - g.v, 0.06)
    aphase = (g.v - (a.apex + 0.05) + 0.45 * g.ax) * (1.0 / (sp * 1.15))
    at = aphase - np.floor(aphase)
    ant = np.clip((0.18 - np.abs(at - 0.5)) * 10.0, 0.0, 1.0) * ramp(g.ax - 0.16, 0.06)
    fade = 0.55 + 0.45 * ramp(g.ax - 0.1, 0.1)  # ribs are hard to see over the mediastinum
    return (0.055 * post * fade + 0.014 * ant) * env


def anatomy_canvas(g: Grid, a: Anatomy, rng: np.random.Generator, fracture: dict | None) -> tuple[Canvas, np.ndarray]:
    """The normal chest: returns the canvas and the fixed (non-lung) density.

    ``fracture`` is ``findings.fracture_plan``'s dict (or None): the rib break is drawn with the ribs.
    """
    u, v, ax = g.u, g.v, g.ax
    # body outline: neck, shoulders, chest wall
    neck, shoulder = 0.09 + 0.03 * rng.random(), 0.52 + 0.06 * rng.random()
    wall = a.tw + 0.08 + 0.06 * rng.random()
    half_body = neck + (shoulder - neck) * ramp(v - 0.06 - 0.03 * rng.random(), 0.12)
    half_body = np.minimum(half_body, wall + 0.05 * v + 0.5 * np.clip(0.25 - v, 0, 1))
    body = ramp(half_body - ax, 0.02)
    thick = np.sqrt(np.clip(1.0 - (ax / (half_body + 0.05)) ** 2, 0.0, 1.0))
    tissue = body * (0.36 + 0.12 * thick)
    dia = a.diaphragm(u, ax)
    tissue = tissue + body * 0.10 * ramp(v - dia, 0.02)  # liver / abdomen
    if a.female:
        for side in (0, 1):
            cu = 0.5 + (-1 if side == 0 else 1) * (0.24 + 0.04 * rng.random())
            cv, r = 0.66 + 0.05 * rng.random(), 0.13 + 0.04 * rng.random()
            d2 = ((u - cu) / r) ** 2 + ((v - cv) / (0.8 * r)) ** 2
            tissue = tissue + 0.035 * ramp(1.0 - d2, 0.6) * body
    # lungs
    lat = a.lateral_edge(v)
    med_half = a.med * np.where(v < a.heart_top, 1.0, 0.8).astype(np.float32)
    lung = (
        ramp(lat - ax, 0.012)
        * ramp(v - a.lung_top(ax), 0.015)
        * ramp(dia - v, 0.012)
        * ramp(ax - med_half - 0.008, 0.012)
    )
    # heart (its base shifted to the patient's left = image right)
    hu, hv, hw, hh = a.heart_geometry()
    du, dv = u - hu, v - (hv + 0.045)
    along, across = du * 0.92 - dv * 0.39, du * 0.39 + dv * 0.92  # long axis tilted toward the apex
    e2 = (along / hw) ** 2 + (across / (1.3 * hh)) ** 2
    heart = np.clip((1.0 - e2) * 4.0, 0.0, 1.0) * ramp(dia + 0.01 - v, 0.02)
    # mediastinum and aortic knob
    mediast = ramp(med_half - ax, 0.025) * ramp(a.heart_top + 0.05 - v, 0.04)
    knob_u, knob_v = 0.5 + a.med + 0.01, a.heart_top - 0.09
    knob = np.clip(1.0 - (((u - knob_u) / 0.03) ** 2 + ((v - knob_v) / 0.03) ** 2), 0.0, 1.0)
    # spine (vertebral bodies) and trachea
    spine = ramp(0.033 - ax, 0.01) * (0.75 + 0.25 * np.cos(v * (2 * math.pi / 0.06)))
    trachea = ramp(0.017 - np.abs(u - 0.5 - 0.01 * (v - 0.2)), 0.008) * ramp(a.heart_top - 0.08 - v, 0.03)
    # clavicles (top rows only) and humeral heads
    top = window(g, (0.0, 0.0, 1.0, 0.35))
    vt = v[top[0]]
    cl_v = 0.19 + 0.02 * rng.random() - 0.28 * (ax - 0.05) + 0.5 * (ax - 0.2) ** 2
    clav = ramp(0.011 - np.abs(vt - cl_v), 0.008) * ramp(ax - 0.04, 0.01) * ramp(0.36 - ax, 0.03)
    hum_v = 0.10 + 0.04 * rng.random()
    hum = np.clip(1.0 - (((ax - 0.5) / 0.08) ** 2 + ((vt - hum_v) / 0.09) ** 2), 0.0, 1.0) ** 0.5
    bones = _ribs(g, a, rng, fracture)
    bones[top] += 0.11 * clav + 0.10 * hum * body[top]
    # vascular markings radiating from the hila
    near, far = smooth_profile(rng, 360, 3.0), smooth_profile(rng, 360, 4.0)
    mix = g.radial_mix
    vessels = near[g.theta_bin] * (1.0 - mix) + far[g.theta_bin] * mix
    vessels = vessels * np.exp(-g.radius * (1.0 / (0.13 + 0.04 * rng.random())))
    vessels = vessels * (0.75 + 0.25 * np.clip(lowres_noise(rng, g.size, 40), -1.0, 1.0))
    hilum = np.exp(-((g.radius * (1.0 / 0.05)) ** 2))
    markings = (0.20 * vessels + 0.08 * hilum) * lung
    air_profile = 0.20 + 0.07 * ramp(v - a.apex - 0.06, 0.16) - 0.03 * ramp(v - dia + 0.08, 0.12)
    air = air_profile * lung * (1.0 - 0.9 * heart)
    fixed = tissue + 0.10 * mediast + 0.05 * knob + 0.08 * heart + 0.03 * spine * body - 0.05 * trachea + bones
    fixed = fixed + 0.012  # scatter: air outside the body is not perfectly black
    canvas = Canvas(
        g, a, lung, air.astype(np.float32), markings.astype(np.float32), np.zeros((g.size, g.size), np.float32)
    )
    return canvas, fixed.astype(np.float32)
