"""What the phantoms show and how often: the finding table, label sampling and the global constants.

Appearance of each finding is tuned in one table, ``FINDINGS`` (contrast and size ranges,
label rates), and globally by ``difficulty`` (contrast divided by it: 2.0 = half as
conspicuous). To make one finding easier or harder for the model, move its ``contrast``
(and, for the small ones, its ``size``) up or down: both are interpolated by severity, and
uncertain labels are drawn at the low end (``severities_for``), so the faint end is what
"subtle" means. Bump ``PHANTOM_VERSION`` whenever the output changes: caches key on it.

Scale: the canonical frame spans about 38 cm, so 0.01 is ~3.8 mm (1.5 mm per pixel at 256 px,
3.4 mm at the 112 px the default student trains at).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError

PHANTOM_VERSION = "2"

DIFFICULTY = 1.0  # default global difficulty: every finding's contrast is divided by it
JPEG_QUALITY = 92
MIN_SIZE = 64


@dataclass(frozen=True)
class FindingSpec:
    """How often a finding is labelled, and how it looks.

    prevalence: marginal share of train rows labelled positive or uncertain (the co-occurrence
        model in ``sample_labels`` is calibrated to roughly these values; the rare findings
        (lesion, pneumonia, pleural other, fracture) are floored at 7-13%, above CheXpert's 2-4%,
        so that the 2,000-image default set holds ~100 positives of each: at v2's first
        calibration, 3-5% left ~50-80 and a tiny student learned nothing of them).
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
    # contrast = extra upper-mediastinal half-width as a fraction of the normal one (normal
    # varies by about +-12%, and AP films are a little wider)
    "Enlarged Cardiomediastinum": FindingSpec(0.05, 0.15, 0.05, (0.18, 0.60), (0.0, 0.0)),
    # contrast = cardiothoracic ratio reached at severity 0 and 1 (normal 0.42-0.50; AP +0.02)
    "Cardiomegaly": FindingSpec(0.12, 0.10, 0.06, (0.52, 0.60), (0.0, 0.0)),
    # standalone hazy (ground-glass) opacity; contrast = share of lung air replaced; size = radius
    "Lung Opacity": FindingSpec(0.47, 0.05, 0.05, (0.20, 0.55), (0.06, 0.10)),
    # nodule / mass; contrast in absolute density (a solid nodule replaces the lung air in its
    # path, ~0.27, and adds its own tissue); size = radius by severity:
    # 0.014-0.055 is a 10-41 mm nodule or mass (the positives, severity >= 0.45, are >= 24 mm:
    # at the default 112 px, 7-30 mm left the positives 2-4 px wide and the student learned
    # nothing of them (held-out AUC 0.51; 9-36 mm: 0.64) while a top-hat detector found them (0.92))
    "Lung Lesion": FindingSpec(0.13, 0.12, 0.03, (0.38, 0.58), (0.014, 0.055)),
    # bilateral perihilar haze + engorged, indistinct vessels + basal septal lines; contrast =
    # share of lung air replaced at the hila. Normal vessel strength varies 0.75-1.3x (anatomy),
    # which the faint end overlaps on purpose.
    "Edema": FindingSpec(0.24, 0.15, 0.10, (0.05, 0.30), (0.10, 0.14)),
    # dense lobar opacity with air bronchograms and a fissure edge; size = lobe half-extent
    "Consolidation": FindingSpec(0.07, 0.20, 0.15, (0.60, 1.00), (0.08, 0.12)),
    # patchy multifocal (broncho)pneumonia; contrast = share of air replaced; size = cluster radius
    "Pneumonia": FindingSpec(0.07, 0.25, 0.10, (0.70, 1.00), (0.08, 0.12)),
    # plate-like band(s) at a base + raised hemidiaphragm; contrast = share of air replaced in
    # the band (and 0.07 * contrast of dome elevation); size = band half-length
    "Atelectasis": FindingSpec(0.15, 0.30, 0.05, (0.45, 1.00), (0.07, 0.12)),
    # visceral pleural line with no lung markings lateral to it; contrast = extra lucency and
    # line brightness; size = rim width by severity (0.03 = ~1 cm, 0.09 = ~3.5 cm)
    "Pneumothorax": FindingSpec(0.09, 0.10, 0.30, (0.80, 1.30), (0.035, 0.095)),
    # basal meniscus blunting the costophrenic angle; size = fluid height
    "Pleural Effusion": FindingSpec(0.39, 0.12, 0.25, (0.40, 1.00), (0.025, 0.14)),
    # pleural thickening / calcified plaques along the lateral chest wall; contrast = density of
    # the thickening (calcified plaques 1.6x); size = half-length; thickness grows with severity
    "Pleural Other": FindingSpec(0.08, 0.20, 0.02, (0.35, 0.55), (0.06, 0.11)),
    # rib fractures: cortex break (contrast = gap depth, fraction of the rib), step-off (size, in
    # rib widths); 1 rib at severity < 0.4, up to 3 adjacent ribs and a callus at severity 1
    "Fracture": FindingSpec(0.10, 0.15, 0.03, (0.60, 1.00), (0.60, 1.20)),
    # tubes, lines, pacemaker, ECG leads; contrast in absolute density
    "Support Devices": FindingSpec(0.52, 0.01, 0.05, (0.20, 0.45), (0.0, 0.0)),
}

# In split="valid" every pathology is positive in at least this share of rows (extra positives
# drawn independently of everything else, so they add no co-occurrence): CheXpert's own valid
# set has its own prevalences, and 500 rows at 3-5% leave too few positives for a usable CI.
VALID_FLOOR = 0.10

# Findings that are opacities: any of them positive makes Lung Opacity positive.
OPACITY_SOURCES: tuple[str, ...] = ("Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")

# Split name -> the number mixed into each image's seed (see ``make_record``).
SPLITS = {"train": 0, "valid": 1}

_PATHOLOGIES: tuple[str, ...] = CHEXPERT_LABELS[1:]  # everything but No Finding

# Chance of an extra independent positive in valid, so that prevalence + (1 - prevalence) *
# boost reaches VALID_FLOOR (FINDINGS' prevalences are the calibrated marginals).
_VALID_BOOST = {
    label: max(0.0, (VALID_FLOOR - FINDINGS[label].prevalence) / (1.0 - FINDINGS[label].prevalence))
    for label in _PATHOLOGIES
}


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def check_size_and_difficulty(size: int, difficulty: float) -> None:
    if size < MIN_SIZE:
        raise ConfigError(f"phantom size {size} is too small; use at least {MIN_SIZE} pixels")
    if difficulty <= 0:
        raise ConfigError(f"difficulty must be positive, got {difficulty}")


def finding_level(label: str, severity: float, difficulty: float) -> float:
    """The finding's contrast at ``severity`` in [0, 1], divided by ``difficulty``."""
    lo, hi = FINDINGS[label].contrast
    return (lo + (hi - lo) * severity) / difficulty


def finding_size(label: str, rng: np.random.Generator) -> float:
    """A random extent within the finding's size range."""
    lo, hi = FINDINGS[label].size
    return lo + (hi - lo) * rng.random()


def finding_extent(label: str, severity: float, rng: np.random.Generator) -> float:
    """An extent tied to severity (small findings: subtle = small), with +-10% jitter."""
    lo, hi = FINDINGS[label].size
    return (lo + (hi - lo) * float(np.clip(severity, 0.0, 1.0))) * (0.9 + 0.2 * rng.random())


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
    and no blank cells, as in CheXpert's validation set, and every pathology is positive in at
    least ``VALID_FLOOR`` of the rows.
    """
    check_split(split)
    if force is not None and force not in FINDINGS:
        raise ConfigError(f"unknown finding {force!r}; expected one of {', '.join(CHEXPERT_LABELS)}")
    u = rng.random(48)  # a fixed number of draws keeps rows comparable across code paths
    heart_failure = u[0] < 0.18
    infection = u[1] < 0.12
    devices = u[2] < FINDINGS["Support Devices"].prevalence
    effusion = u[3] < (0.70 if heart_failure else 0.32)
    pos = {
        "Enlarged Cardiomediastinum": u[4] < (0.10 if heart_failure else 0.04),
        "Cardiomegaly": u[5] < (0.45 if heart_failure else 0.05),
        "Edema": u[6] < (0.75 if heart_failure else 0.13),
        "Consolidation": u[7] < (0.40 if infection else 0.025),
        "Pneumonia": u[8] < (0.45 if infection else 0.02),
        "Atelectasis": u[9] < (0.20 if effusion else 0.12),
        "Pneumothorax": u[10] < (0.13 if devices else 0.047),
        "Pleural Effusion": effusion,
        "Pleural Other": u[11] < FINDINGS["Pleural Other"].prevalence,
        "Fracture": u[12] < FINDINGS["Fracture"].prevalence,
        "Lung Lesion": u[13] < FINDINGS["Lung Lesion"].prevalence,
        "Support Devices": devices,
        "Lung Opacity": u[14] < 0.07,  # standalone haze; opacity sources add to it below
    }
    if split == "valid":
        for j, label in enumerate(_PATHOLOGIES):
            pos[label] = pos[label] or bool(u[34 + j] < _VALID_BOOST[label])
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


def forced_label(index: int) -> str | None:
    """The first rows of each split cycle through every finding twice, so none is missing."""
    return CHEXPERT_LABELS[index % len(CHEXPERT_LABELS)] if index < 2 * len(CHEXPERT_LABELS) else None
