"""CheXpert CSV reading: header and value validation, view filters, path resolution, label policies."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from mxa_edge.data.chexpert import (
    ChexpertSplit,
    Uncertainty,
    dataset_fingerprint,
    find_dataset_root,
    patient_key,
    read_split,
    subset,
    targets_and_mask,
)
from mxa_edge.labels import CHEXPERT_COLUMNS, CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError, DatasetError

SHARED = Path(__file__).resolve().parents[2] / "shared"
PEDIATRIC = SHARED / "data" / "pediatric-pneumonia"

NF, PNA, ATL, SD = (CHEXPERT_LABELS.index(n) for n in ("No Finding", "Pneumonia", "Atelectasis", "Support Devices"))

HEADER = ",".join(CHEXPERT_COLUMNS)


def _labels(**values: str) -> str:
    """The 14 label cells, blank unless given by index name (e.g. PNA="-1.0")."""
    cells = [""] * len(CHEXPERT_LABELS)
    for key, value in values.items():
        cells[globals()[key]] = value
    return ",".join(cells)


# Exactly CheXpert's layout: Path relative to the root's parent, Sex/Age, view columns, 14 labels.
S = "CheXpert-v1.0-small/train"
ROWS = [
    f"{S}/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,{_labels(NF='1.0', SD='1.0')}",
    f"{S}/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,{_labels(PNA='-1.0', ATL='-1.0', SD='0.0')}",
    f"{S}/patient00002/study2/view2_lateral.jpg,Female,87,Lateral,,{_labels(PNA='-1.0')}",
    f"{S}/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,PA,{_labels(PNA='1', ATL='0')}",
    f"{S}/patient00004/study1/view1_frontal.jpg,Male,20,Frontal,pa,{_labels(NF='1.0')}",
]


def _dataset(tmp_path: Path, rows=ROWS, name="CheXpert-v1.0-small", header=HEADER, with_images=True) -> Path:
    root = tmp_path / name
    root.mkdir(parents=True)
    (root / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    (root / "valid.csv").write_text("\n".join([header, *rows[:2]]) + "\n")
    if with_images:
        for row in rows:
            rel = Path(row.split(",", 1)[0])
            image = root.joinpath(*rel.parts[1:])
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"jpeg")
    return root


def test_read_split_frontal_only(tmp_path):
    root = _dataset(tmp_path)
    split = read_split(root, "train")
    assert isinstance(split, ChexpertSplit)
    assert len(split) == 4
    assert split.name == "train" and split.root == root
    assert split.views == ["Frontal"] * 4
    assert split.ap_pa == ["AP", "AP", "PA", "pa"]
    assert split.rel_paths[0] == ROWS[0].split(",")[0]
    assert all(p.is_absolute() and p.is_file() for p in split.paths)
    assert split.paths[0] == tmp_path / ROWS[0].split(",")[0]
    assert split.raw.dtype == np.float32 and split.raw.shape == (4, 14)
    assert split.raw[0, NF] == 1.0 and split.raw[0, SD] == 1.0 and math.isnan(split.raw[0, PNA])
    assert split.raw[1, PNA] == -1.0 and split.raw[1, ATL] == -1.0 and split.raw[1, SD] == 0.0
    assert split.raw[2, PNA] == 1.0 and split.raw[2, ATL] == 0.0  # "1" and "0" spellings
    assert np.isnan(split.raw).sum() == 4 * 14 - 8


def test_read_split_with_laterals_and_valid(tmp_path):
    root = _dataset(tmp_path)
    assert read_split(root, "train", frontal_only=False).views.count("Lateral") == 1
    assert len(read_split(root, "valid")) == 2


def test_ap_pa_filter_is_case_insensitive(tmp_path):
    root = _dataset(tmp_path)
    pa = read_split(root, "train", ap_pa="PA")
    assert pa.ap_pa == ["PA", "pa"]
    ap = read_split(root, "train", ap_pa="ap")
    assert len(ap) == 2 and set(ap.ap_pa) == {"AP"}


def test_csv_path_as_split(tmp_path):
    root = _dataset(tmp_path)
    custom = tmp_path / "subset.csv"
    custom.write_text("\n".join([HEADER, ROWS[3]]) + "\n")
    split = read_split(root, str(custom))
    assert split.name == "subset" and len(split) == 1 and split.paths[0].is_file()


def test_renamed_root_falls_back(tmp_path):
    root = _dataset(tmp_path, name="chexpert")  # CSV still says CheXpert-v1.0-small/...
    split = read_split(root, "train")
    assert split.paths[0] == root / "train/patient00001/study1/view1_frontal.jpg"
    assert all(p.is_file() for p in split.paths)
    assert split.rel_paths[0].startswith("CheXpert-v1.0-small/")


def test_without_images_keeps_chexpert_convention(tmp_path):
    root = _dataset(tmp_path, name="labels-only", with_images=False)
    split = read_split(root, "train")
    assert split.paths[0] == tmp_path / ROWS[0].split(",")[0]


def test_missing_columns_named(tmp_path):
    header = HEADER.replace(",Pneumonia", "").replace("AP/PA", "View")
    rows = [",".join(r.split(",")[:-1]) for r in ROWS]
    root = _dataset(tmp_path, rows=rows, header=header)
    with pytest.raises(DatasetError) as info:
        read_split(root, "train")
    message = str(info.value)
    assert "train.csv" in message
    assert "'AP/PA'" in message and "'Pneumonia'" in message
    assert "'Path'" not in message


def test_bad_label_value_names_file_line_and_column(tmp_path):
    rows = list(ROWS)
    rows[3] = rows[3].replace(",1,0", ",yes,0")  # Pneumonia on the 4th data row = line 5
    root = _dataset(tmp_path, rows=rows)
    with pytest.raises(DatasetError) as info:
        read_split(root, "train")
    message = str(info.value)
    assert "train.csv" in message and "line 5" in message and "'Pneumonia'" in message and "'yes'" in message


@pytest.mark.parametrize("value", ["2.0", "0.5", "nan"])
def test_other_numbers_are_refused(tmp_path, value):
    rows = [ROWS[0].replace(",1.0,", f",{value},", 1)]
    root = _dataset(tmp_path, rows=rows)
    with pytest.raises(DatasetError, match="line 2"):
        read_split(root, "train")


def test_empty_after_filtering(tmp_path):
    root = _dataset(tmp_path)
    with pytest.raises(DatasetError, match="no images left"):
        read_split(root, "train", ap_pa="LL")
    root2 = _dataset(tmp_path, rows=[ROWS[2]], name="laterals")
    with pytest.raises(DatasetError, match="frontal_only"):
        read_split(root2, "train")


def test_missing_csv(tmp_path):
    with pytest.raises(DatasetError, match="train.csv"):
        read_split(tmp_path, "train")


RAW = np.array(
    [
        [1.0, 0.0, -1.0, np.nan],
        [-1.0, np.nan, 1.0, 0.0],
    ],
    dtype=np.float32,
)


def test_targets_u1():
    targets, mask = targets_and_mask(RAW, Uncertainty.U1)
    np.testing.assert_array_equal(targets, [[1, 0, 1, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(mask, np.ones((2, 4)))
    assert targets.dtype == np.float32 and mask.dtype == np.float32


def test_targets_u0():
    targets, mask = targets_and_mask(RAW, "u0")
    np.testing.assert_array_equal(targets, [[1, 0, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(mask, np.ones((2, 4)))


def test_targets_ignore():
    targets, mask = targets_and_mask(RAW, Uncertainty.IGNORE)
    np.testing.assert_array_equal(targets, [[1, 0, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 0, 1], [0, 1, 1, 1]])


def test_blank_mask():
    targets, mask = targets_and_mask(RAW, Uncertainty.U1, blank="mask")
    np.testing.assert_array_equal(targets, [[1, 0, 1, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 1, 1]])
    _, mask = targets_and_mask(RAW, Uncertainty.IGNORE, blank="mask")
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [0, 0, 1, 1]])


def test_bad_policies():
    with pytest.raises(ConfigError, match="uncertainty"):
        targets_and_mask(RAW, "u2")
    with pytest.raises(ConfigError, match="blank"):
        targets_and_mask(RAW, blank="positive")


def test_fingerprint_stable_and_sensitive(tmp_path):
    a = read_split(_dataset(tmp_path / "a"), "train")
    b = read_split(_dataset(tmp_path / "b", rows=list(reversed(ROWS)), name="renamed"), "train")
    fp = dataset_fingerprint(a)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == dataset_fingerprint(b)  # row order and location do not matter
    changed = list(ROWS)
    changed[0] = changed[0].replace("Frontal,AP,1.0", "Frontal,AP,0.0")
    c = read_split(_dataset(tmp_path / "c", rows=changed), "train")
    assert dataset_fingerprint(c) != fp


def test_find_dataset_root(tmp_path):
    root = _dataset(tmp_path)
    assert find_dataset_root(root) == root
    assert find_dataset_root(tmp_path) == root
    (tmp_path / "other").mkdir()
    assert find_dataset_root(tmp_path) == root
    _dataset(tmp_path, name="second")
    with pytest.raises(DatasetError, match="several"):
        find_dataset_root(tmp_path)
    with pytest.raises(DatasetError, match="train.csv"):
        find_dataset_root(tmp_path / "other")
    with pytest.raises(DatasetError, match="no such folder"):
        find_dataset_root(tmp_path / "absent")


# --- the real pediatric-pneumonia dataset (CheXpert layout) ---------------------------------


def _frontal_rows(csv_path: Path) -> int:
    with csv_path.open(newline="") as f:
        return sum(1 for row in csv.DictReader(f) if row["Frontal/Lateral"] == "Frontal")


@pytest.mark.parametrize("split_name", ["train", "valid"])
def test_real_pediatric_pneumonia(split_name):
    if not SHARED.is_dir():
        pytest.skip("../shared is absent: real images are not part of the repo")
    split = read_split(PEDIATRIC, split_name)
    assert len(split) == _frontal_rows(PEDIATRIC / f"{split_name}.csv") > 0
    assert all(p.is_file() for p in split.paths)
    # Pneumonia is labelled 1.0 / 0.0; No Finding is 1.0 or blank (blank -> negative by default).
    pneumonia = split.raw[:, PNA]
    assert not np.isnan(pneumonia).any() and set(pneumonia.tolist()) == {0.0, 1.0}
    targets, mask = targets_and_mask(split.raw)
    for index in (NF, PNA):
        assert set(targets[:, index].tolist()) == {0.0, 1.0}, CHEXPERT_LABELS[index]
    assert (mask == 1).all()
    others = [i for i in range(len(CHEXPERT_LABELS)) if i not in (NF, PNA)]
    assert np.isnan(split.raw[:, others]).all()
    assert find_dataset_root(PEDIATRIC) == PEDIATRIC


def test_real_pediatric_pneumonia_train_size():
    if not SHARED.is_dir():
        pytest.skip("../shared is absent: real images are not part of the repo")
    assert len(read_split(PEDIATRIC, "train")) == 758  # all 758 rows of train.csv are Frontal


# --- patients, sex and age ----------------------------------------------------------------


@pytest.mark.parametrize(
    "rel, key",
    [
        ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "train/patient00001"),
        ("renamed/valid/patient00001/study2/view2_lateral.jpg", "valid/patient00001"),  # root dropped
        ("root/extra/train/patient7/study1/x.jpg", "extra/train/patient7"),  # all before the study
        ("train/patient00001/view1_frontal.jpg", "train/patient00001"),  # no study: parent folder
        ("images/x.png", "images"),
        ("x.png", "x.png"),  # no folder at all: each image its own patient
    ],
)
def test_patient_key(rel, key):
    assert patient_key(rel) == key


def test_read_split_patients_sex_age(tmp_path):
    split = read_split(_dataset(tmp_path), "train", frontal_only=False)
    assert split.patients == [
        "train/patient00001",
        "train/patient00002",
        "train/patient00002",
        "train/patient00003",
        "train/patient00004",
    ]
    assert split.sex == ["Female", "Female", "Female", "Male", "Male"]
    assert split.age == [68.0, 87.0, 87.0, 41.0, 20.0]


def test_sex_and_age_are_optional(tmp_path):
    # Without the columns: every row unknown, and the CSV is still read.
    header = HEADER.replace("Sex,Age,", "")
    rows = [",".join(r.split(",")[:1] + r.split(",")[3:]) for r in ROWS]
    split = read_split(_dataset(tmp_path / "a", rows=rows, header=header), "train")
    assert len(split) == 4 and split.sex == ["Unknown"] * 4 and all(math.isnan(a) for a in split.age)
    # Blank or unparseable cells: unknown, never an error (they describe, they do not select).
    rows = list(ROWS[:2]) + [ROWS[3].replace("Male,41", ",abc"), ROWS[4].replace("Male,20", "unknown,-3")]
    split = read_split(_dataset(tmp_path / "b", rows=rows), "train")
    assert split.sex == ["Female", "Female", "Unknown", "Unknown"]
    assert split.age[:2] == [68.0, 87.0] and all(math.isnan(a) for a in split.age[2:])


def test_subset_slices_every_row_field(tmp_path):
    split = read_split(_dataset(tmp_path), "train", frontal_only=False)
    part = subset(split, np.array([4, 1]), name="tune")
    assert part.name == "tune" and part.root == split.root and len(part) == 2
    for f in dataclasses.fields(ChexpertSplit):
        whole, sliced = getattr(split, f.name), getattr(part, f.name)
        if isinstance(whole, np.ndarray):
            np.testing.assert_array_equal(sliced, whole[[4, 1]])
        elif isinstance(whole, list):
            assert sliced == [whole[4], whole[1]], f.name
    assert subset(split, np.array([], dtype=int)).name == "train"
    # A split built by hand without the newer fields keeps them empty.
    bare = ChexpertSplit(root=split.root, name="x", paths=split.paths, raw=split.raw)
    assert subset(bare, [0, 2]).patients == [] and len(subset(bare, [0, 2])) == 2
