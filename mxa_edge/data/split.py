"""The tuning carve: train.csv's patients split between *training* and *tuning*.

A run keeps three roles of data apart: it fits weights on the training rows, chooses
everything else it chooses (epoch, calibration, thresholds, accuracy control) on the tuning
rows, and is judged on valid.csv, which neither touches. Both sides come from train.csv,
so the carve must keep each patient whole: two studies of one person on both sides would
let the tuning split reward memorising that person.

The carve is stratified because CheXpert's rare findings (Pleural Other, Fracture, Lung
Lesion) have few positive patients, and a purely random 10% could hold none of them, which
leaves a threshold with nothing to be tuned on. A positive here is a raw 1.0, never an
uncertain -1.0: the carve must not move when a run changes its uncertainty policy.

Deterministic given the rows, the fraction and the seed; patients are sorted before any
draw, so the CSV's row order does not matter either. numpy only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mxa_edge.data.chexpert import ChexpertSplit, patient_key
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError, DatasetError

MAX_TUNE_FRACTION = 0.5  # beyond this the "tuning" split would be larger than the training one


def check_tune_fraction(fraction) -> float:
    """``fraction`` as a float in [0, MAX_TUNE_FRACTION], or ConfigError."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not math.isfinite(fraction):
        raise ConfigError(f"tune_fraction must be a number in [0, {MAX_TUNE_FRACTION}], got {fraction!r}")
    if not 0.0 <= fraction <= MAX_TUNE_FRACTION:
        raise ConfigError(
            f"tune_fraction {fraction!r} is outside [0, {MAX_TUNE_FRACTION}]; "
            "0 trains on all of train.csv (no tuning split), 0.1 is the usual carve"
        )
    return float(fraction)


def check_tune_seed(seed) -> int:
    """``seed`` as a non-negative int, or ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"tune_seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def tuning_rows(split: ChexpertSplit, fraction: float, seed: int) -> np.ndarray:
    """Bool mask (len(split),): True for the rows that go to the tuning split.

    Every row of a patient goes the same way. Findings are taken from the rarest (fewest
    positive patients) to the most common; for each, random patients positive for it are added
    until the tuning split holds round(fraction x its positive patients) of them, at least one
    when it has two or more, and never all of them (training keeps a positive of every finding
    it has). Then random patients fill the split up to about round(fraction x rows): a patient
    is taken only when that brings the count closer, so one patient with many images does not
    overshoot it. ``fraction`` 0 gives all False.

    ConfigError for a fraction outside [0, 0.5] or a bad seed; DatasetError, naming the CSV,
    when ``fraction`` > 0 but the rows cannot be carved (one patient: no training rows left).
    """
    fraction = check_tune_fraction(fraction)
    seed = check_tune_seed(seed)
    n_rows = len(split)
    if fraction == 0.0 or n_rows == 0:
        return np.zeros(n_rows, dtype=bool)
    keys = split.patients if len(split.patients) == n_rows else [patient_key(rel) for rel in split.rel_paths]
    # np.unique sorts: patient p is the same index whatever the row order.
    patients, row_patient = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    n_patients = len(patients)
    csv = split.root / f"{split.name}.csv"
    if n_patients < 2:
        raise DatasetError(
            f"{csv}: cannot carve a tuning split: all {n_rows} rows belong to one patient ({patients[0]}); "
            "a patient never straddles training and tuning, so set tune_fraction 0 or add patients"
        )
    rows_of = np.bincount(row_patient, minlength=n_patients)
    positive = np.zeros((n_patients, len(CHEXPERT_LABELS)), dtype=bool)
    np.logical_or.at(positive, row_patient, np.asarray(split.raw) == 1.0)

    rng = np.random.default_rng(seed)
    chosen = np.zeros(n_patients, dtype=bool)
    n_positive = positive.sum(axis=0)
    for finding in np.argsort(n_positive, kind="stable"):  # rarest first; ties in label order
        n_pos = int(n_positive[finding])
        if n_pos == 0:
            continue
        wanted = min(_round_half_up(fraction * n_pos), n_pos - 1)
        if n_pos >= 2:
            wanted = max(wanted, 1)
        missing = wanted - int((chosen & positive[:, finding]).sum())
        if missing > 0:
            candidates = np.flatnonzero(positive[:, finding] & ~chosen)
            chosen[rng.permutation(candidates)[:missing]] = True

    target = max(_round_half_up(fraction * n_rows), 1)
    held = int(rows_of[chosen].sum())
    for p in rng.permutation(np.flatnonzero(~chosen)):
        if held >= target:
            break
        if abs(held + int(rows_of[p]) - target) < target - held:  # closer to the target with p than without
            chosen[p] = True
            held += int(rows_of[p])
    if not chosen.any():  # every patient is larger than twice the target: take the smallest
        chosen[np.argmin(rows_of)] = True
    if chosen.all():
        raise DatasetError(
            f"{csv}: carving a tuning split of {fraction:g} took all {n_patients} patients, leaving no "
            "training rows; lower tune_fraction or add patients"
        )
    return chosen[row_patient]


def _round_half_up(x: float) -> int:
    # Python's round() sends 0.5 and 2.5 to the even neighbour; a carve is easier to predict without.
    return int(math.floor(x + 0.5))
