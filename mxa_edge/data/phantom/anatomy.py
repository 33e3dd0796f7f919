"""The normal chest: anatomy parameters, its parts, and the canvas findings paint into.

Canonical frame: u to the image's right (= the PATIENT'S LEFT), v down, both in [0, 1]
over ~38 cm. Density units: soft tissue ~0.4-0.5, lung air subtracts ~0.2-0.3.

What is drawn, and the AP/PA differences a real film shows:

- body outline with neck, shoulders and chest-wall thickness; breast shadows (female) with
  their curved lower margin over the lower zones (never nipples: a normal nodule-like mark
  would be Lung Lesion's confound);
- lungs with rounded apices, curved lateral walls, hemidiaphragm domes (the right higher) and
  sharp costophrenic angles; a gastric bubble under the left dome in most films;
- heart LEFT of the midline with its real silhouette (right atrium on the image left, the
  pulmonary trunk and left ventricle sweeping to an apex on the image right), the upper
  mediastinum, aortic knob and descending aorta, trachea and main bronchi, spine;
- clavicles, scapulae, humeral heads; curved posterior ribs (bright cortex, lucent medulla)
  and fainter anterior ribs running down toward the sternum;
- vascular markings radiating from the hila and reaching the periphery (so Pneumothorax's
  missing markings are visible), whose strength varies between normal films (so mild Edema
  overlaps normal), plus parenchymal texture.

AP (portable, supine or sitting, front-to-back) vs PA: the heart is magnified (CTR +0.02) and
the mediastinum a little wider, inspiration is poorer (domes higher), the clavicles project
higher and flatter over the apices, the scapulae overlap the upper lateral lungs (in PA they
are rotated out of the lung fields); ``exposure`` adds the portable film's noise and scatter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mxa_edge.data.phantom.geometry import Box, Grid, lowres_noise, ramp, smooth_profile, window


@dataclass
class Anatomy:
    tw: float  # lung lateral half-width (thorax) around u = 0.5
    apex: float  # v of the lung apices
    dome: list[float]  # v of the hemidiaphragm dome tops, [right (image left), left]
    depth: float  # how much lower the costophrenic angles are than the domes
    med: float  # upper mediastinum half-width
    ctr: float  # cardiothoracic ratio (transverse heart diameter / 2 tw)
    heart_top: float
    heart_base: float  # v the heart's outline is scaled to (the left dome before any finding moves it)
    rib_spacing: float  # posterior rib period (v units)
    rib_curve: float  # how steeply posterior ribs fall laterally
    rib_offset: float  # left ribs' phase shift relative to the right, in periods
    clavicle: float  # v of the clavicles' sternal ends
    scapula: float  # medial border of the scapulae, as an offset from tw (> 0: outside the lungs)
    vessels: float  # strength of the normal vascular markings (normal variation)
    ap: bool
    female: bool

    # -- shapes -----------------------------------------------------------------------
    def rib_center(self, ax: float, rib: int, side: int) -> float:
        """v of posterior rib ``rib``'s centre line at lateral distance ``ax``."""
        shift = 0.0 if side == 0 else self.rib_offset * self.rib_spacing
        return self.apex - 0.05 + shift + self.rib_shape(ax) + (rib + 0.5) * self.rib_spacing

    def rib_shape(self, ax):
        """Posterior ribs rise a little from the spine, then curve down toward the lateral wall."""
        return -0.16 * ax + self.rib_curve * ax * ax

    def lateral_edge(self, v):
        """Lung half-width at height v: narrow rounded apex, widest at the costophrenic angles."""
        return self.tw * (0.40 + 0.60 * np.sqrt(np.clip((v - self.apex) / 0.34, 0.0, 1.0)))

    def lung_top(self, ax):
        return self.apex + 2.4 * (ax - 0.18) ** 2

    def diaphragm(self, u, ax):
        """v of the hemidiaphragm: a dome peaking mid-lung, dropping steeply into the angle."""
        dome = np.where(u < 0.5, self.dome[0], self.dome[1])
        curve = 0.9 * (ax - 0.19) ** 2
        lateral = self.depth * np.clip((ax - 0.19) / (self.tw - 0.19), 0.0, 1.0) ** 2.5
        medial = 0.4 * self.depth * np.clip((0.19 - ax) / 0.15, 0.0, 1.0) ** 2
        return (dome + curve + lateral + medial).astype(np.float32)

    def heart_geometry(self) -> tuple[float, float, float, float]:
        """(centre u, centre v, half-width, half-height) of the cardiac silhouette's bounding box."""
        width = self.ctr * 2.0 * self.tw
        left, right = 0.5 - 0.36 * width, 0.5 + 0.64 * width
        bottom = self.heart_bottom
        return 0.5 * (left + right), 0.5 * (self.heart_top + bottom), 0.5 * width, 0.5 * (bottom - self.heart_top)

    @property
    def heart_bottom(self) -> float:
        return self.heart_base

    def heart_edges(self, v):
        """Image-left (right atrium) and image-right (left ventricle) borders at height v."""
        width = self.ctr * 2.0 * self.tw
        s = np.clip((v - self.heart_top) / (self.heart_bottom - 0.02 - self.heart_top), 0.0, 1.0)
        # right atrium: from the SVC's width at the top, bulging convexly into the right lung
        right_atrium = 0.045 + (0.36 * width - 0.045) * np.sin(0.5 * np.pi * np.clip(s / 0.6, 0.0, 1.0)) ** 0.7
        right_atrium = right_atrium - 0.012 * np.clip((s - 0.85) / 0.15, 0.0, 1.0) ** 2
        sweep = np.sin(0.5 * np.pi * np.clip((s - 0.12) / 0.72, 0.0, 1.0)) ** 0.8
        trunk = 0.012 * np.exp(-(((s - 0.1) / 0.08) ** 2))  # pulmonary trunk / left atrial appendage
        left_ventricle = 0.05 + (0.64 * width - 0.05) * sweep + trunk
        left_ventricle = left_ventricle - 0.04 * np.clip((s - 0.9) / 0.1, 0.0, 1.0) ** 2  # rounded apex
        return 0.5 - right_atrium, 0.5 + left_ventricle

    def lung_box(self, side: int) -> Box:
        lo_v = max(self.dome) + self.depth
        if side == 0:
            return (0.5 - self.tw, self.apex, 0.5 - self.med + 0.01, lo_v)
        return (0.5 + self.med - 0.01, self.apex, 0.5 + self.tw, lo_v)

    def random_lung_point(
        self, rng: np.random.Generator, side: int, margin: float, zone=(0.0, 1.0)
    ) -> tuple[float, float]:
        """A point inside lung ``side`` at least ``margin`` from its edges (and clear of the
        heart); zone is a v fraction range from the apex (0) to the dome (1)."""
        top, bottom = self.apex + 0.06, self.dome[side] - 0.01
        v = top + (bottom - top) * (zone[0] + (zone[1] - zone[0]) * rng.random())
        inner = self.med + 0.02
        if v > self.heart_top:
            edges = self.heart_edges(np.float32(v))
            inner = max(inner, float(0.5 - edges[0] if side == 0 else edges[1] - 0.5) - 0.03)
        lo, hi = inner + margin, float(self.lateral_edge(v)) - margin
        if hi < lo:  # too low for this margin: the middle of the available width
            lo = hi = 0.5 * (inner + float(self.lateral_edge(v)))
        ax = lo + (hi - lo) * rng.random()
        return (0.5 - ax if side == 0 else 0.5 + ax), v


def sample_anatomy(rng: np.random.Generator, ap: bool, female: bool) -> Anatomy:
    """A normal chest. Every draw happens whatever ``ap``/``female`` are (fixed stream layout)."""
    r = rng.random(16)
    apex = 0.11 + 0.04 * r[0]
    # AP films: poorer inspiration (domes ~1.5 cm higher)
    dome_r = 0.61 + 0.05 * r[1] - (0.04 if ap else 0.0)
    ctr = float(np.clip(0.455 + 0.03 * (r[2] + r[3] - 1.0) * 1.7, 0.40, 0.51)) + (0.02 if ap else 0.0)
    med = (0.052 + 0.014 * r[4]) * (1.06 if ap else 1.0)
    return Anatomy(
        tw=0.35 + 0.05 * r[5],
        apex=apex,
        dome=[dome_r, dome_r + 0.015 + 0.025 * r[6]],
        depth=0.07 + 0.04 * r[7],
        med=med,
        ctr=ctr,
        heart_top=0.39 + 0.04 * r[8] - (0.02 if ap else 0.0),
        heart_base=dome_r + 0.045 + 0.025 * r[6],
        rib_spacing=(dome_r - apex + 0.08) / (9.0 + 0.8 * r[9]),
        rib_curve=1.5 + 0.5 * r[10],
        rib_offset=0.2 * (r[11] - 0.5),
        clavicle=apex + (0.03 + 0.03 * r[12] if not ap else -0.01 + 0.03 * r[12]),
        # the scapulae's medial borders: rotated out of the lungs in PA, over them in AP
        scapula=0.06 + 0.05 * r[13] if not ap else -0.09 + 0.04 * r[13],
        vessels=0.75 + 0.55 * r[14],
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
    markings: np.ndarray  # vascular markings and parenchymal texture inside the lungs (density)
    extra: np.ndarray  # density added by findings (negative: lucency)


def _rib_bands(t: np.ndarray, half: float) -> np.ndarray:
    """A rib cross-section from its phase t in [0, 1): bright cortex, a little lucent medulla."""
    d = np.abs(t - 0.5)
    band = np.clip((half - d) * 40.0, 0.0, 1.0)
    cortex = np.clip(1.0 - np.abs(d - half + 0.04) * 18.0, 0.0, 1.0)
    return band * 0.7 + 0.45 * cortex


def _ribs(g: Grid, a: Anatomy, fracture: dict | None) -> np.ndarray:
    """Posterior (bright, curving down laterally) and anterior (faint, down toward the sternum)
    ribs; ``fracture`` (``findings.fracture_plan``) breaks some posterior ribs."""
    sp = a.rib_spacing
    v0 = np.where(g.left, a.apex - 0.05, a.apex - 0.05 + a.rib_offset * sp).astype(np.float32)
    phase = (g.v - v0 - a.rib_shape(g.ax)) * (1.0 / sp)
    gap = None
    if fracture is not None:
        w = window(g, fracture["box"])
        ph = phase[w]
        on_side = g.left[:, w[1]] if fracture["side"] == 0 else ~g.left[:, w[1]]
        axw = g.ax[:, w[1]]
        mult = np.ones(ph.shape, np.float32)
        callus = np.zeros(ph.shape, np.float32)
        for k, ax_b in zip(fracture["ribs"], fracture["ax"]):
            near = (np.abs(ph - (k + 0.5)) < 0.55) & on_side
            # step-off: the lateral fragment is displaced by a fraction of a rib width, and
            # angles back into line over ~1.5 cm (the drawing stays inside the box)
            lateral = np.clip((axw - ax_b) / 0.003, 0.0, 1.0) * np.clip((ax_b + 0.035 - axw) / 0.02, 0.0, 1.0)
            ph -= fracture["step"] * near * lateral
            across = np.exp(-(((axw - ax_b) / fracture["gap"]) ** 2))
            mult -= fracture["depth"] * near * across
            if fracture["callus"] > 0:
                cv = v0[:, w[1]] + a.rib_shape(ax_b) + (k + 0.5) * sp
                # A compact bump (zero 0.048 across and 0.68 rib spacings up and down, inside the
                # box) rather than a Gaussian, whose tails the box cut into a faint straight edge
                # that the student used as a shortcut (Fracture AUC 0.71 with it, 0.57 without).
                q = ((axw - ax_b) / 0.048) ** 2 + ((g.v[w[0]] - cv) / (0.68 * sp)) ** 2
                blob = np.clip(1.0 - q, 0.0, 1.0) ** 2
                callus += fracture["callus"] * blob * on_side
        phase[w] = ph
        gap = (w, np.clip(mult, 0.0, 1.0), callus)
    t = phase - np.floor(phase)
    post = _rib_bands(t, 0.2)
    if gap is not None:
        post[gap[0]] = post[gap[0]] * gap[1] + gap[2]
    lower = a.diaphragm(g.u, g.ax) + 0.02
    env = ramp(a.tw + 0.04 - g.ax, 0.02) * ramp(g.v - (a.apex - 0.04), 0.04) * ramp(lower - g.v, 0.04)
    env = env * ramp(g.ax - 0.035, 0.015)  # posterior ribs start at the transverse processes
    aphase = (g.v - (a.apex + 0.03) + 0.55 * g.ax - 1.2 * np.maximum(g.ax - a.tw + 0.08, 0.0) ** 2) * (1.0 / (sp * 1.1))
    at = aphase - np.floor(aphase)
    ant = np.clip((0.22 - np.abs(at - 0.5)) * 12.0, 0.0, 1.0) * ramp(g.ax - 0.15, 0.05)
    ant = ant * ramp(lower - 0.04 - g.v, 0.05)
    fade = 0.5 + 0.5 * ramp(g.ax - 0.1, 0.08)  # ribs are hard to see over the mediastinum
    return (0.10 * post * fade + 0.022 * ant) * env


def _shoulder_girdle(g: Grid, a: Anatomy, body: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """Clavicles, scapulae and humeral heads in the top half: (window, density)."""
    top = window(g, (0.0, 0.0, 1.0, 0.5))
    vt, ax = g.v[top[0]], g.ax
    # clavicle: an S from the sternal end up and out to the acromion (flatter in AP)
    rise = 0.10 if a.ap else 0.20
    cl_v = a.clavicle - rise * (ax - 0.05) + 0.9 * (ax - 0.16) ** 2 * (ax > 0.16) - 0.2 * (ax - 0.05) ** 2 * (ax < 0.16)
    clav = ramp(0.012 - np.abs(vt - cl_v), 0.008) * ramp(ax - 0.045, 0.012) * ramp(0.36 - ax, 0.03)
    clav = clav * (0.8 + 0.2 * np.clip(np.abs(vt - cl_v) * 120.0, 0.0, 1.0))  # cortical edges
    # scapula: a plate lateral to its medial border, which runs down and slightly in
    border = a.tw + a.scapula + 0.05 * (vt - a.apex)
    plate = ramp(ax - border, 0.012) * ramp(a.apex + 0.34 - vt, 0.08) * ramp(vt - a.apex + 0.03, 0.03)
    edge = np.exp(-(((ax - border) / 0.006) ** 2)) * ramp(a.apex + 0.32 - vt, 0.08) * ramp(vt - a.apex, 0.03)
    # humeral heads at the upper corners
    hum = np.clip(1.0 - (((ax - 0.5) / 0.08) ** 2 + ((vt - a.apex + 0.02) / 0.09) ** 2), 0.0, 1.0) ** 0.5
    dens = 0.12 * clav + (0.04 * plate + 0.05 * edge + 0.10 * hum) * body[top]
    return top, dens


def anatomy_canvas(g: Grid, a: Anatomy, rng: np.random.Generator, fracture: dict | None) -> tuple[Canvas, np.ndarray]:
    """The normal chest: returns the canvas and the fixed (non-lung) density.

    ``fracture`` is ``findings.fracture_plan``'s dict (or None): the rib break is drawn with
    the ribs. The number of draws from ``rng`` never depends on ``fracture``.
    """
    u, v, ax = g.u, g.v, g.ax
    r = rng.random(12)
    # body outline: neck, shoulders, chest wall
    neck, shoulder = 0.09 + 0.03 * r[0], 0.50 + 0.06 * r[1]
    wall = a.tw + 0.06 + 0.06 * r[2]
    half_body = neck + (shoulder - neck) * ramp(v - 0.05 - 0.03 * r[3], 0.12)
    half_body = np.minimum(half_body, wall + 0.05 * v + 0.5 * np.clip(0.25 - v, 0, 1))
    body = ramp(half_body - ax, 0.02)
    thick = np.sqrt(np.clip(1.0 - (ax / (half_body + 0.05)) ** 2, 0.0, 1.0))
    tissue = body * (0.34 + 0.14 * thick)
    dia = a.diaphragm(u, ax)
    tissue = tissue + body * 0.11 * ramp(v - dia, 0.012)  # liver / spleen / abdomen
    # gastric bubble under the left dome (most films)
    if r[4] < 0.7:
        gu, gv = 0.5 + 0.13 + 0.05 * r[5], a.dome[1] + 0.035 + 0.02 * r[6]
        w = window(g, (gu - 0.05, gv - 0.03, gu + 0.05, gv + 0.03))
        bubble = np.clip(1.0 - (((u[:, w[1]] - gu) / 0.045) ** 2 + ((v[w[0]] - gv) / 0.028) ** 2), 0.0, 1.0) ** 0.5
        tissue[w] -= 0.10 * bubble * ramp(v[w[0]] - dia[:, w[1]] - 0.01, 0.01)
    # breast shadows: lower-lateral soft tissue with a curved, fairly sharp inferior margin
    if a.female:
        for side in (0, 1):
            cu = 0.5 + (-1 if side == 0 else 1) * (0.22 + 0.05 * r[7 + side])
            cv, rad = a.dome[side] - 0.06 + 0.03 * r[9], 0.15 + 0.04 * r[10]
            w = window(g, (cu - 1.1 * rad, cv - 0.85 * rad, cu + 1.1 * rad, cv + 0.85 * rad))
            uu, vv = u[:, w[1]], v[w[0]]
            d2 = ((uu - cu) / rad) ** 2 + ((vv - cv) / (0.75 * rad)) ** 2
            tissue[w] += 0.07 * ramp(1.0 - d2, 0.15) * ramp(vv - cv + 0.6 * rad, 0.2) * body[w]
    else:  # pectoral muscles: a faint band over the upper lateral lungs
        tissue = tissue + 0.015 * body * ramp(ax - 0.2, 0.1) * ramp(a.apex + 0.3 - v, 0.1)
    # lungs
    lat = a.lateral_edge(v)
    # medial border: the upper mediastinum above the heart (Enlarged Cardiomediastinum widens
    # it), the spine behind the heart (the heart's own density hides the lung there)
    medial = 0.04 + (a.med - 0.04) * ramp(a.heart_top + 0.03 - v, 0.03)
    lung = ramp(lat - ax, 0.010) * ramp(v - a.lung_top(ax), 0.015) * ramp(dia - v, 0.008) * ramp(ax - medial, 0.012)
    # heart: its silhouette, left of the midline, sitting on the diaphragm
    hl, hr = a.heart_edges(v)
    heart = ramp(u - hl, 0.008) * ramp(hr - u, 0.008) * ramp(v - a.heart_top, 0.03) * ramp(dia - v + 0.005, 0.01)
    # upper mediastinum (great vessels), aortic knob, descending aorta, spine, trachea and
    # main bronchi: all within a central column
    cw = window(g, (0.5 - a.med - 0.07, 0.0, 0.5 + a.med + 0.07, 1.0))
    uc, axc, dc = u[:, cw[1]], ax[:, cw[1]], dia[:, cw[1]]
    mediast = ramp(a.med - axc, 0.012) * ramp(a.heart_top + 0.04 - v, 0.03) * ramp(v - a.apex + 0.02, 0.06)
    knob_u, knob_v = 0.5 + a.med + 0.005, a.heart_top - 0.035
    knob = np.clip(1.0 - (((uc - knob_u) / 0.026) ** 2 + ((v - knob_v) / 0.024) ** 2), 0.0, 1.0) ** 0.5
    desc = ramp(0.008 - np.abs(uc - 0.5 - 0.04), 0.006) * ramp(v - knob_v, 0.02) * ramp(dc - v, 0.02)
    level = np.cos(v * (2 * math.pi / 0.055))
    spine = ramp(0.032 - axc, 0.008) * (0.75 + 0.25 * level)
    pedicles = np.exp(-(((axc - 0.025) / 0.006) ** 2)) * np.clip(level, 0.0, 1.0) ** 4
    carina = a.heart_top - 0.02
    trachea = ramp(0.016 - np.abs(uc - 0.5 + 0.004 * (v > knob_v - 0.03)), 0.006) * ramp(carina - v, 0.01)
    trachea = trachea * ramp(v - a.apex + 0.08, 0.03)
    for side in (-1, 1):
        along = (v - carina) * 0.8 + (uc - 0.5) * side * 0.6
        across = (uc - 0.5) * side * 0.8 - (v - carina) * 0.6
        trachea = trachea + 0.6 * ramp(0.009 - np.abs(across), 0.005) * ramp(along, 0.01) * ramp(0.06 - along, 0.02)
    central = (
        0.09 * mediast
        + 0.05 * knob
        + 0.035 * desc
        + (0.035 * spine + 0.02 * pedicles) * body[:, cw[1]]
        - 0.06 * trachea
    )
    girdle_window, girdle = _shoulder_girdle(g, a, body)
    bones = _ribs(g, a, fracture)
    bones[girdle_window] += girdle
    # vascular markings radiating from the hila, reaching the periphery, varying between films
    near, far = smooth_profile(rng, 360, 3.0), smooth_profile(rng, 360, 5.0)
    mix = g.radial_mix
    vessels = near[g.theta_bin] * (1.0 - mix) + far[g.theta_bin] * mix
    vessels = vessels * (0.25 + np.exp(-g.radius * (1.0 / (0.12 + 0.04 * r[11]))))
    texture = lowres_noise(rng, g.size, 48)
    vessels = vessels * (0.7 + 0.3 * np.clip(texture, -1.0, 1.0))
    hilum = np.exp(-((g.radius * (1.0 / 0.045)) ** 2))
    mottle = lowres_noise(rng, g.size, 24)  # parenchymal / overlying soft-tissue texture
    markings = (a.vessels * (0.20 * vessels + 0.10 * hilum) + 0.010 * mottle) * lung
    air_profile = 0.21 + 0.07 * ramp(v - a.apex - 0.06, 0.16) - 0.03 * ramp(v - dia + 0.08, 0.12)
    air = air_profile * lung * (1.0 - 0.85 * heart)
    fixed = tissue + 0.11 * heart + bones
    fixed[:, cw[1]] += central
    fixed = fixed + 0.012  # scatter: air outside the body is not perfectly black
    canvas = Canvas(
        g,
        a,
        lung.astype(np.float32),
        air.astype(np.float32),
        markings.astype(np.float32),
        np.zeros((g.size, g.size), np.float32),
    )
    return canvas, fixed.astype(np.float32)
