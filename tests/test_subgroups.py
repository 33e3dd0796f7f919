"""Subgroup slices from the CSV's Sex, Age and AP/PA columns, and when a slice can be evaluated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mxa_edge.data.chexpert import ChexpertSplit, read_split, subset
from mxa_edge.data.subgroups import MIN_SLICE_IMAGES, slice_status, subgroup_rows
from mxa_edge.labels import CHEXPERT_COLUMNS, CHEXPERT_LABELS

SHARED = Path(__file__).resolve().parents[2] / "shared"
PEDIATRIC = SHARED / "data" / "pediatric-pneumonia"
BLANK_LABELS = "," * (len(CHEXPERT_LABELS) - 1)

# (Sex, Age, Frontal/Lateral, AP/PA) per row, in CSV order.
META = [
    ("Male", "70", "Frontal", "AP"),  # 0
    ("Female", "39", "Frontal", "PA"),  # 1
    ("Female", "40", "Frontal", "pa"),  # 2: lower-case projection is PA
    ("Unknown", "65", "Frontal", "AP"),  # 3: 65 is in 40-65
    ("female", "65.5", "Frontal", "LL"),  # 4: capitalised to Female; 65.5 is >65
    ("", "", "Frontal", ""),  # 5: nothing known: in no slice
    ("Other", "n/a", "Lateral", ""),  # 6: a sex CheXpert does not use; unparseable age
    ("Male", "0", "Frontal", "AP"),  # 7
]


def _split(tmp_path: Path) -> ChexpertSplit:
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    rows = [
        f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg,{sex},{age},{view},{proj},{BLANK_LABELS}"
        for i, (sex, age, view, proj) in enumerate(META, start=1)
    ]
    (root / "train.csv").write_text("\n".join([",".join(CHEXPERT_COLUMNS), *rows]) + "\n")
    return read_split(root, "train", frontal_only=False)


def test_subgroup_rows(tmp_path):
    slices = subgroup_rows(_split(tmp_path))
    assert list(slices) == [
        "Sex: Female",
        "Sex: Male",
        "Sex: Other",
        "Age: <40",
        "Age: 40-65",
        "Age: >65",
        "AP/PA: AP",
        "AP/PA: PA",
        "AP/PA: LL",
    ]
    expected = {
        "Sex: Female": [1, 2, 4],
        "Sex: Male": [0, 7],
        "Sex: Other": [6],
        "Age: <40": [1, 7],
        "Age: 40-65": [2, 3],
        "Age: >65": [0, 4],
        "AP/PA: AP": [0, 3, 7],
        "AP/PA: PA": [1, 2],
        "AP/PA: LL": [4],
    }
    for name, rows in expected.items():
        assert slices[name].tolist() == rows, name
        assert slices[name].dtype.kind == "i"
    in_some_slice = set(np.concatenate(list(slices.values())).tolist())
    assert 5 not in in_some_slice  # unknown everywhere: no "Unknown" slice


def test_subgroup_rows_leave_out_empty_slices(tmp_path):
    split = _split(tmp_path)
    slices = subgroup_rows(subset(split, [1, 2]))  # two women, 39 and 40, both PA
    assert list(slices) == ["Sex: Female", "Age: <40", "Age: 40-65", "AP/PA: PA"]
    bare = ChexpertSplit(root=split.root, name="x", paths=split.paths, raw=split.raw)  # no sex/age/views
    assert subgroup_rows(bare) == {}


def test_slice_status():
    assert slice_status(MIN_SLICE_IMAGES, 1, MIN_SLICE_IMAGES - 1) is None
    assert slice_status(12, 3, 9) == "too small: 12 images (< 30)"
    assert slice_status(0, 0, 0) == "too small: 0 images (< 30)"
    assert slice_status(100, 0, 100) == "no positives"
    assert slice_status(100, 100, 0) == "no negatives"


def test_real_pediatric_pneumonia_has_only_projection_slices():
    if not PEDIATRIC.is_dir():
        pytest.skip(f"{PEDIATRIC} is absent: real images live in ../shared beside the checkout, never in the repo")
    split = read_split(PEDIATRIC, "valid")
    slices = subgroup_rows(split)
    assert slices and all(name.startswith("AP/PA: ") for name in slices)  # sex and age are not recorded
    assert sum(len(rows) for rows in slices.values()) == len(split)
