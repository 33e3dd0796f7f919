"""Calibration sets for INT8: which images set the activation ranges.

Sources (``calib`` argument / ``--calib``):
- None: the run's own TRAIN split, ``n`` images stratified so rare findings appear;
- a CSV with CheXpert's header: the same stratified selection over its rows;
- a folder: up to ``n`` images found under it (any supported format), seeded choice.
The fingerprint (first 16 hex of sha256 over the sorted relative paths) goes into the
artifact manifest so a quantized model can be traced to the images that calibrated it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mxa_edge.data.arrays import decode_resized, to_model_range
from mxa_edge.formats import RunRecord
from mxa_edge.formats.records import CalibrationRecord
from mxa_edge.imaging.imageio import is_supported_image
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.support.errors import DatasetError


@dataclass
class CalibrationSet:
    images: np.ndarray  # uint8 (N, S, S) at the model resolution
    rel_paths: list[str]
    source: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images)

    def model_input(self, preprocess: Preprocess) -> np.ndarray:

        return to_model_range(self.images, preprocess)

    def summary(self) -> CalibrationRecord:
        """The manifest's ``calibration`` section."""
        return CalibrationRecord(source=self.source, n=len(self), fingerprint=self.fingerprint)


def fingerprint(rel_paths) -> str:
    return hashlib.sha256("\n".join(sorted(rel_paths)).encode()).hexdigest()[:16]


def stratified_indices(targets: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy: labels from rarest to most common, each adds up to ceil(n / C) of its
    positives not yet chosen; the rest of the budget is filled at random. Sorted indices."""
    N, C = targets.shape
    if n >= N:
        return np.arange(N)
    quota = -(-n // C)
    chosen: list[int] = []
    taken = np.zeros(N, dtype=bool)
    pos_counts = targets.sum(axis=0)
    for c in np.argsort(pos_counts, kind="stable"):
        pos = np.flatnonzero((targets[:, c] == 1) & ~taken)
        pick = rng.permutation(pos)[: min(quota, n - len(chosen))]
        taken[pick] = True
        chosen.extend(pick.tolist())
        if len(chosen) >= n:
            break
    rest = rng.permutation(np.flatnonzero(~taken))[: n - len(chosen)]
    return np.sort(np.concatenate([np.asarray(chosen, dtype=int), rest]))


def _from_split(split, targets, n, rng, preprocess, source) -> CalibrationSet:

    idx = stratified_indices(targets, n, rng)
    images = np.stack([decode_resized(split.paths[i], preprocess) for i in idx]) if len(idx) else None
    if images is None:
        raise DatasetError(f"{source}: no images for calibration")
    rels = [split.rel_paths[i] for i in idx]
    return CalibrationSet(images, rels, source, fingerprint(rels))


def select_calibration(run: RunRecord, calib=None, n: int = 300, seed: int = 0) -> CalibrationSet:
    """The calibration set for a run from ``calib`` (see module doc)."""

    if n < 1:
        raise DatasetError(f"calibration size must be at least 1, got {n}")
    pp = run.preprocess
    rng = np.random.default_rng(seed)
    if calib is None:
        split = run.data.read("train")
        targets, _ = run.data.targets(split)
        return _from_split(split, targets, n, rng, pp, f"run train split ({split.root})")
    calib = Path(calib).expanduser().absolute()
    if calib.is_file() and calib.suffix.lower() == ".csv":
        # The run's view filters on a CSV of the user's; uncertain counts as "has the finding" here.
        csv_policy = replace(run.data, root=str(calib.parent), uncertainty="u1", blank="negative")
        split = csv_policy.read(str(calib))
        targets, _ = csv_policy.targets(split)
        return _from_split(split, targets, n, rng, pp, str(calib))
    if calib.is_dir():
        files = sorted(p for p in calib.rglob("*") if p.is_file() and is_supported_image(p))
        if not files:
            raise DatasetError(f"{calib}: no PNG/JPEG/DICOM images found for calibration")
        idx = np.sort(rng.permutation(len(files))[:n])
        chosen = [files[i] for i in idx]
        images = np.stack([decode_resized(p, pp) for p in chosen])
        rels = [p.relative_to(calib).as_posix() for p in chosen]
        return CalibrationSet(images, rels, str(calib), fingerprint(rels))
    raise DatasetError(f"{calib}: --calib must be a folder of images or a CSV with CheXpert's header")
