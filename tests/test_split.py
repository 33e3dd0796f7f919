"""The tuning carve: patient-level, stratified, deterministic; DataSelection's train / tune / valid."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from mxa_edge.data.arrays import CachedRows, load_split_arrays
from mxa_edge.data.chexpert import read_split
from mxa_edge.data.split import tuning_rows
from mxa_edge.formats import DataSelection
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.labels import CHEXPERT_COLUMNS, CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError, DatasetError

SHARED = Path(__file__).resolve().parents[2] / "shared"
PEDIATRIC = SHARED / "data" / "pediatric-pneumonia"
HEADER = ",".join(CHEXPERT_COLUMNS)
ROOT_NAME = "CheXpert-v1.0-small"

FRACTURE, LESION, PLEURAL_OTHER, PTX, NF = (
    CHEXPERT_LABELS.index(n) for n in ("Fracture", "Lung Lesion", "Pleural Other", "Pneumothorax", "No Finding")
)


def _row(patient: int, study: int, view: str, labels: dict[int, str]) -> str:
    cells = [""] * len(CHEXPERT_LABELS)
    for index, value in labels.items():
        cells[index] = value
    file = "view1_frontal.jpg" if view == "Frontal" else "view2_lateral.jpg"
    proj = "" if view == "Lateral" else ("AP" if patient % 2 else "PA")
    path = f"{ROOT_NAME}/train/patient{patient:05d}/study{study}/{file}"
    return f"{path},Female,50,{view},{proj}," + ",".join(cells)


def _rows(n_patients: int = 60) -> list[str]:
    """1-3 studies per patient (a frontal each, a lateral on some), so a patient has 1-6 rows.

    Fracture has 2 positive patients, Lung Lesion 5, Pleural Other 1; Pneumothorax is only ever
    uncertain (-1.0), which the carve does not count as positive; the rest are No Finding.
    """
    rows = []
    for p in range(1, n_patients + 1):
        for study in range(1, p % 3 + 2):
            labels = {NF: "1.0"}
            if p in (7, 41):
                labels = {FRACTURE: "1.0"}
            elif p in (3, 12, 25, 33, 50):
                labels = {LESION: "1.0", PTX: "-1.0"}
            elif p == 19:
                labels = {PLEURAL_OTHER: "1.0"}
            elif p % 4 == 0:
                labels = {PTX: "-1.0"}
            rows.append(_row(p, study, "Frontal", labels))
            if study == 1 and p % 5 == 0:
                rows.append(_row(p, study, "Lateral", labels))
    return rows


def _dataset(folder: Path, rows: list[str] | None = None) -> Path:
    root = folder / ROOT_NAME
    root.mkdir(parents=True)
    rows = _rows() if rows is None else rows
    (root / "train.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    valid = [r.replace("/train/", "/valid/") for r in _rows(4)]
    (root / "valid.csv").write_text("\n".join([HEADER, *valid]) + "\n")
    return root


def _patients(split) -> set[str]:
    return set(split.patients)


# --- tuning_rows --------------------------------------------------------------------------------


def test_carve_keeps_patients_whole_and_near_the_fraction(tmp_path):
    split = read_split(_dataset(tmp_path), "train", frontal_only=False)
    tune = tuning_rows(split, 0.2, seed=0)
    assert tune.dtype == bool and tune.shape == (len(split),)
    patients = np.array(split.patients)
    assert not set(patients[tune]) & set(patients[~tune])
    assert abs(int(tune.sum()) - round(0.2 * len(split))) <= 3  # "about": whole patients of 1-6 rows


def test_carve_gives_rare_findings_positives_in_both_splits(tmp_path):
    split = read_split(_dataset(tmp_path), "train")
    for seed in range(20):
        tune = tuning_rows(split, 0.1, seed)
        for finding in (FRACTURE, LESION):  # 2 and 5 positive patients: at least one each side
            positive = split.raw[:, finding] == 1.0
            assert (positive & tune).any() and (positive & ~tune).any(), (seed, CHEXPERT_LABELS[finding])
        # One positive patient: it stays in training (a finding never loses all its positives there).
        assert not (split.raw[tune, PLEURAL_OTHER] == 1.0).any()


def test_carve_is_deterministic_and_independent_of_row_order(tmp_path):
    rows = _rows()
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    a = read_split(_dataset(tmp_path / "a", rows), "train", frontal_only=False)
    b = read_split(_dataset(tmp_path / "b", shuffled), "train", frontal_only=False)
    tune_a, tune_b = tuning_rows(a, 0.1, 5), tuning_rows(b, 0.1, 5)
    assert np.array_equal(tune_a, tuning_rows(a, 0.1, 5))
    chosen_a = {rel for rel, t in zip(a.rel_paths, tune_a) if t}
    assert chosen_a == {rel for rel, t in zip(b.rel_paths, tune_b) if t}
    assert any(not np.array_equal(tune_a, tuning_rows(a, 0.1, seed)) for seed in range(1, 6))  # the seed matters


def test_fraction_zero_and_bad_arguments(tmp_path):
    split = read_split(_dataset(tmp_path), "train")
    assert not tuning_rows(split, 0.0, 0).any() and len(tuning_rows(split, 0, 0)) == len(split)
    for bad in (-0.1, 0.51, 1.0, float("nan"), "0.1", True):
        with pytest.raises(ConfigError, match="tune_fraction"):
            tuning_rows(split, bad, 0)
    for bad in (-1, 1.5, None):
        with pytest.raises(ConfigError, match="tune_seed"):
            tuning_rows(split, 0.1, bad)
    assert tuning_rows(split, 0.5, 0).any() and not tuning_rows(split, 0.5, 0).all()


def test_one_patient_cannot_be_carved(tmp_path):
    rows = [r for r in _rows() if "/patient00002/" in r]  # 3 studies of one patient
    split = read_split(_dataset(tmp_path, rows), "train")
    assert len(split) == 3
    with pytest.raises(DatasetError, match=r"train\.csv.*one patient"):
        tuning_rows(split, 0.1, 0)
    assert not tuning_rows(split, 0.0, 0).any()


# --- DataSelection ------------------------------------------------------------------------------


@pytest.mark.parametrize("filters", [{}, {"frontal_only": False}, {"ap_pa": "PA"}])
def test_selection_train_and_tune_partition_the_filtered_csv(tmp_path, filters):
    root = _dataset(tmp_path)
    sel = DataSelection(root=str(root), tune_fraction=0.2, **filters)
    train, tune = sel.read("train"), sel.read("tune")
    assert train.name == "train" and tune.name == "tune" and len(tune) > 0
    assert not _patients(train) & _patients(tune)
    whole = read_split(root, "train", frontal_only=sel.frontal_only, ap_pa=sel.ap_pa)
    assert sorted(train.rel_paths + tune.rel_paths) == sorted(whole.rel_paths)
    assert train.rel_paths == [r for r in whole.rel_paths if r not in set(tune.rel_paths)]  # CSV order kept
    valid = sel.read("valid")
    assert not set(valid.rel_paths) & set(train.rel_paths + tune.rel_paths)


def test_selection_carve_ignores_the_label_policy(tmp_path):
    root = _dataset(tmp_path)
    tunes = [
        DataSelection(root=str(root), uncertainty=u, blank=b).read("tune").rel_paths
        for u, b in (("u1", "negative"), ("u0", "mask"), ("ignore", "negative"))
    ]
    assert tunes[0] == tunes[1] == tunes[2]


def test_selection_without_a_tuning_split(tmp_path):
    root = _dataset(tmp_path)
    sel = DataSelection(root=str(root), tune_fraction=0.0)
    assert sel.read("train").rel_paths == read_split(root, "train").rel_paths
    with pytest.raises(DatasetError, match=r"train\.csv: this run has no tuning split"):
        sel.read("tune")
    with pytest.raises(DatasetError, match="no tuning split"):
        sel.load("tune", Preprocess(image_size=32))
    with pytest.raises(ConfigError, match="tune_fraction"):
        DataSelection(root=str(root), tune_fraction=0.7)


def test_selection_csv_path_is_read_whole(tmp_path):
    root = _dataset(tmp_path)
    sel = DataSelection(root=str(root))
    assert sel.read(str(root / "train.csv")).rel_paths == read_split(root, "train").rel_paths


def test_selection_round_trip():
    sel = DataSelection(root="/data/x", ap_pa="PA", tune_fraction=0.25, tune_seed=7, counts={"train": 9, "tune": 3})
    d = sel.to_dict()
    assert d["tune_fraction"] == 0.25 and d["tune_seed"] == 7 and d["n_tune"] == 3
    assert DataSelection.from_dict(d) == sel
    assert DataSelection(root="/x").tune_fraction == 0.1  # a new run carves 10% by default
    old = {k: v for k, v in d.items() if k not in ("tune_fraction", "tune_seed")}
    restored = DataSelection.from_dict(old)  # a record from before the carve: no tuning split
    assert restored.tune_fraction == 0.0 and restored.tune_seed == 0


# --- loading carved splits (real images: phantoms) -------------------------------------------------


def test_load_carved_splits_with_and_without_the_cache(phantom_root):
    from mxa_edge.data.cache import open_cached
    from mxa_edge.support.paths import cache_dir

    pp = Preprocess(image_size=40)  # a size no other test caches
    sel = DataSelection(root=str(phantom_root), uncertainty="u0")
    whole = load_split_arrays(phantom_root, "train", pp, uncertainty="u0", cache=False)
    index = {rel: i for i, rel in enumerate(whole.split.rel_paths)}

    def check(arrays, name):
        rows = [index[rel] for rel in arrays.split.rel_paths]
        assert arrays.split.name == name
        assert np.array_equal(np.asarray(arrays.images), whole.images[rows])
        assert np.array_equal(arrays.targets, whole.targets[rows]) and np.array_equal(arrays.mask, whole.mask[rows])
        return rows

    # Without a cache only the split's own rows are decoded.
    totals = []
    tune = sel.load("tune", pp, cache=False, progress=lambda done, total: totals.append(total))
    assert len(tune) == len(sel.read("tune")) and set(totals) == {len(tune)}
    tune_rows = check(tune, "tune")
    train_rows = check(sel.load("train", pp, cache=False), "train")
    assert sorted(tune_rows + train_rows) == list(range(len(whole)))

    # The cache is the whole filtered train.csv's: built once, then serving both sides.
    assert open_cached(whole.split, pp) is None
    cached_tune = sel.load("tune", pp, cache=True)
    assert open_cached(whole.split, pp) is not None
    assert [p.name.split("-")[0] for p in (cache_dir() / "images").glob("*-40px-*")] == ["train"]
    assert isinstance(cached_tune.images, CachedRows)
    check(cached_tune, "tune")
    cached_train = sel.load("train", pp)  # cache=None: found automatically
    assert isinstance(cached_train.images, CachedRows) and cached_train.images.shape == (len(train_rows), 40, 40)
    check(cached_train, "train")
    # Indexing reads just those rows, as training's batches do; model_input goes through it.
    pick = np.array([5, 0, 3])
    assert np.array_equal(cached_train.images[pick], whole.images[np.array(train_rows)[pick]])
    assert np.array_equal(cached_train.images[2:4], whole.images[train_rows[2:4]])
    assert cached_train.model_input(pick, pp).shape == (3, 1, 40, 40)
    # limit keeps the first rows of the carved split.
    head = sel.load("train", pp, limit=7)
    assert head.split.rel_paths == cached_train.split.rel_paths[:7]
    check(head, "train")
    assert check(sel.load("train", pp, limit=7, cache=False), "train") == train_rows[:7]


# --- the real pediatric-pneumonia dataset --------------------------------------------------------


def test_real_pediatric_pneumonia_carve():
    if not PEDIATRIC.is_dir():
        pytest.skip(f"{PEDIATRIC} is absent: real images live in ../shared beside the checkout, never in the repo")
    sel = DataSelection(root=str(PEDIATRIC))
    train, tune, valid = sel.read("train"), sel.read("tune"), sel.read("valid")
    whole = read_split(PEDIATRIC, "train")
    assert len(train) + len(tune) == len(whole) == 758
    assert not _patients(train) & _patients(tune)
    assert abs(len(tune) - round(0.1 * len(whole))) <= 2
    for finding, name in enumerate(CHEXPERT_LABELS):
        positive_patients = {p for p, v in zip(whole.patients, whole.raw[:, finding]) if v == 1.0}
        if len(positive_patients) >= 2:
            assert (tune.raw[:, finding] == 1.0).any(), name
            assert (train.raw[:, finding] == 1.0).any(), name
    held_out = set(valid.rel_paths)
    assert not held_out & set(train.rel_paths) and not held_out & set(tune.rel_paths)


def test_phantom_splits_share_no_patient(phantom_root):
    """The three roles on the phantoms: the tuning split shares no patient with the training
    images, and no patient or image with the held-out valid.csv."""
    sel = DataSelection(root=str(phantom_root))
    train, tune, valid = (sel.read(split) for split in ("train", "tune", "valid"))
    assert len(tune) and len(train) and len(valid)
    assert not set(tune.patients) & set(train.patients)
    assert not set(tune.patients) & set(valid.patients) and not set(train.patients) & set(valid.patients)
    assert not set(tune.rel_paths) & set(valid.rel_paths)
