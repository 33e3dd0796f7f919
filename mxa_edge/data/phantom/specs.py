"""What the phantoms show and how often: the finding table, label sampling and the global constants.

Appearance of each finding is tuned in one table, ``FINDINGS`` (contrast and size ranges,
label rates), and globally by ``difficulty`` (contrast divided by it: 2.0 = half as
conspicuous). Bump ``PHANTOM_VERSION`` whenever the output changes: caches key on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from mxa_edge.errors import ConfigError
from mxa_edge.labels import CHEXPERT_LABELS

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

# Split name -> the number mixed into each image's seed (see ``make_record``).
SPLITS = {"train": 0, "valid": 1}

_PATHOLOGIES: tuple[str, ...] = CHEXPERT_LABELS[1:]  # everything but No Finding


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
    check_split(split)
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


def forced_label(index: int) -> str | None:
    """The first rows of each split cycle through every finding twice, so none is missing."""
    return CHEXPERT_LABELS[index % len(CHEXPERT_LABELS)] if index < 2 * len(CHEXPERT_LABELS) else None
