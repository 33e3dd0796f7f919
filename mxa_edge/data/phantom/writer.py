"""Write phantoms as a CheXpert-layout dataset: one record per image, then the CSVs.

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
any order or in parallel.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from mxa_edge.data.phantom.render import render_lateral, render_phantom
from mxa_edge.data.phantom.specs import (
    DIFFICULTY,
    JPEG_QUALITY,
    SPLITS,
    check_size_and_difficulty,
    check_split,
    forced_label,
    sample_labels,
    severities_for,
)
from mxa_edge.labels import CHEXPERT_COLUMNS, CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError


@dataclass(frozen=True)
class PhantomRecord:
    """One generated CSV row, its image (JPEG bytes) and its normalised boxes."""

    row: tuple[str, ...]
    jpeg: bytes
    boxes: tuple[tuple[str, float, float, float, float], ...]

    @property
    def path(self) -> str:
        return self.row[0]


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
    check_split(split)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index)]))
    force = forced_label(index)
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
        image, pixel_boxes = render_phantom(
            image_rng, size, severities, difficulty=difficulty, view=ap, female=sex == "Female"
        )
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
    check_size_and_difficulty(size, difficulty)
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
