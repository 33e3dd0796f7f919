"""Subgroup slices of a split from the CSV's own columns: sex, age band, projection, and the
dataset of each row in a merged split.

A model that is good on average can be poor for one group (women, the elderly, AP films
taken at the bedside of the sickest patients); the report shows per-slice metrics so that
shows. Slices come only from what the CSV records (Sex, Age, AP/PA), never from a model.

Rows whose value is unknown (Sex blank or "Unknown", Age blank or unparseable, no AP/PA as
on laterals) belong to no slice of that column, and there is no "Unknown" slice: a metric on
"whoever was not recorded" describes the CSV's bookkeeping, not a group of patients. So a
column's slices need not add up to the split; the caller can show the difference. Slices
with no rows are left out (pediatric-pneumonia records no sex or age: it has no Sex or Age
slices at all). Whether a slice has enough images for its metrics is ``slice_status``.

numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from mxa_edge.data.chexpert import UNKNOWN_SEX, ChexpertSplit

# Below this, one image moves a slice's sensitivity by 3+ points: its AUC, sensitivity and
# specificity are noise, whatever the bootstrap says.
MIN_SLICE_IMAGES = 30

# Age bands in years: <40, 40-65 (both ends included), >65.
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<40", -math.inf, 40.0),  # age < 40
    ("40-65", 40.0, 65.0),  # 40 <= age <= 65
    (">65", 65.0, math.inf),  # age > 65
)
_FIRST_SEXES = ("Female", "Male")
_FIRST_PROJECTIONS = ("AP", "PA")


def subgroup_rows(split: ChexpertSplit) -> dict[str, np.ndarray]:
    """{slice name: int row indices (ascending)} for every non-empty slice, in a stable order.

    Names and order: "Dataset: <name>" per dataset of a merged split (in the order given), then
    "Sex: Female", "Sex: Male", then any other recorded sex (sorted);
    "Age: <40", "Age: 40-65" (40 <= age <= 65), "Age: >65"; "AP/PA: AP", "AP/PA: PA", then
    any other projection (sorted). Sex is compared capitalised ("female" is "Female") and
    projection upper-cased ("pa" is "PA"), as the ap_pa filter compares them.
    """
    n = len(split)
    out: dict[str, np.ndarray] = {}

    # A merged split (--data A --data B): each dataset is a slice, in the order given, so the
    # gate, the drift table and the report judge every dataset as well as the pool.
    datasets = _column(split.dataset, n, "")
    names = list(dict.fromkeys(d for d in datasets if d))
    if len(names) > 1:
        for value in names:
            out[f"Dataset: {value}"] = _rows(d == value for d in datasets)

    sexes = [s.strip().capitalize() for s in _column(split.sex, n, UNKNOWN_SEX)]
    for value in _ordered(set(sexes) - {UNKNOWN_SEX, ""}, _FIRST_SEXES):
        out[f"Sex: {value}"] = _rows(v == value for v in sexes)

    ages = np.asarray(_column(split.age, n, math.nan), dtype=np.float64)
    known = ~np.isnan(ages)
    for label, lo, hi in AGE_BANDS:
        if lo == -math.inf:
            in_band = known & (ages < hi)
        elif hi == math.inf:
            in_band = known & (ages > lo)
        else:
            in_band = known & (ages >= lo) & (ages <= hi)
        if in_band.any():
            out[f"Age: {label}"] = np.flatnonzero(in_band)

    projections = [p.strip().upper() for p in _column(split.ap_pa, n, "")]
    for value in _ordered(set(projections) - {""}, _FIRST_PROJECTIONS):
        out[f"AP/PA: {value}"] = _rows(p == value for p in projections)
    return out


def slice_status(n_images: int, n_pos: int, n_neg: int) -> str | None:
    """Why one finding's metrics on one slice are not reported, or None when they are.

    ``n_images``: the slice's images; ``n_pos``/``n_neg``: its positives and negatives for the
    finding (rows the label policy masks out count as neither). A slice with fewer than
    MIN_SLICE_IMAGES images is too small for any metric; AUC needs both classes, sensitivity
    positives and specificity negatives, so a slice lacking either class is skipped as a
    whole rather than reporting half a row. The caller shows the reason in place of the
    slice's AUC, sensitivity and specificity.
    """
    if n_images < MIN_SLICE_IMAGES:
        return f"too small: {n_images} images (< {MIN_SLICE_IMAGES})"
    if n_pos == 0:
        return "no positives"
    if n_neg == 0:
        return "no negatives"
    return None


def _column(values: list, n: int, unknown) -> list:
    # A split built by hand may leave sex/age empty: every row is then unknown.
    return list(values) if len(values) == n else [unknown] * n


def _ordered(values: set[str], first: tuple[str, ...]) -> list[str]:
    return [v for v in first if v in values] + sorted(values - set(first))


def _rows(flags) -> np.ndarray:
    return np.flatnonzero(np.fromiter(flags, dtype=bool))
