"""Procedural chest-radiograph phantoms written in CheXpert's layout: the embedded default dataset.

There is no real CheXpert in the toolkit. ``generate_phantom_dataset`` draws synthetic
FRONTAL chest X-rays ("phantoms", plus a share of crude lateral views) with the 14 CheXpert
findings, and writes them exactly as CheXpert-v1.0-small is laid out, so the ordinary
CheXpert reader (``mxa_edge.data.chexpert``) trains on them unchanged::

    <out_dir>/<root_name>/train.csv       Path,Sex,Age,Frontal/Lateral,AP/PA,<14 findings>
    <out_dir>/<root_name>/valid.csv       same header; only 0.0 / 1.0 (like CheXpert's valid)
    <out_dir>/<root_name>/boxes.csv       Path,label,x1,y1,x2,y2 (normalised, see writer)
    <out_dir>/<root_name>/train/patient00001/study1/view1_frontal.jpg
    <out_dir>/<root_name>/train/patient00007/study1/view2_lateral.jpg
    <out_dir>/<root_name>/valid/patient02001/study1/view1_frontal.jpg

Output is byte-identical for a seed: every image has its own generator (``writer``), and
inside an image the anatomy, each finding and the noise draw from separate streams
(``render``). Bump ``PHANTOM_VERSION`` whenever the output changes: caches key on it.

Modules, in the order an image is made:

- ``specs``: the finding table ``FINDINGS`` (label rates, contrast and size ranges), the
  global constants (``PHANTOM_VERSION``, ``DIFFICULTY``...) and label sampling.
- ``geometry``: the canonical grid (u, v in [0, 1]), boxes and smooth-noise helpers.
- ``anatomy``: the normal chest (body, lungs, heart, mediastinum, bones, vessels) as a canvas.
- ``findings``: one painter per finding, drawing into the canvas and returning its box.
- ``exposure``: framing (rotation, zoom, shift), blur, exposure and detector noise.
- ``render``: ``render_phantom`` (frontal, with findings) and ``render_lateral``.
- ``writer``: ``make_record`` (one row + JPEG) and ``generate_phantom_dataset`` (the CSVs).
"""

from __future__ import annotations

from mxa_edge.data.phantom.geometry import Box
from mxa_edge.data.phantom.render import render_lateral, render_phantom
from mxa_edge.data.phantom.specs import (
    DIFFICULTY,
    FINDINGS,
    JPEG_QUALITY,
    MIN_SIZE,
    OPACITY_SOURCES,
    PHANTOM_VERSION,
    FindingSpec,
    sample_labels,
    severities_for,
)
from mxa_edge.data.phantom.writer import PhantomRecord, generate_phantom_dataset, make_record

__all__ = [
    "DIFFICULTY",
    "FINDINGS",
    "JPEG_QUALITY",
    "MIN_SIZE",
    "OPACITY_SOURCES",
    "PHANTOM_VERSION",
    "Box",
    "FindingSpec",
    "PhantomRecord",
    "generate_phantom_dataset",
    "make_record",
    "render_lateral",
    "render_phantom",
    "sample_labels",
    "severities_for",
]
