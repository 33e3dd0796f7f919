"""Merged datasets (``--data A --data B``): a finding a dataset never labels is masked for its
images, each dataset keeps its own tuning and held-out split, and every row knows its dataset."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path, tiny_config

from mxa_edge.data.subgroups import subgroup_rows
from mxa_edge.formats import DataSelection
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import DatasetError

NEVER = ("Cardiomegaly", "Edema")  # the columns dataset "site-b" never fills
# Both phantom folders are named CheXpert-phantom: the merge names them by their last two folders.
A_NAME, B_NAME = "site-a/CheXpert-phantom", "site-b/CheXpert-phantom"


def _blank_columns(root: Path, columns) -> None:
    """Blank ``columns`` on every row of both CSVs: a dataset whose source never labels them."""
    for name in ("train.csv", "valid.csv"):
        path = root / name
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        fields = list(rows[0])
        for row in rows:
            for c in columns:
                row[c] = ""
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    from mxa_edge.data.phantom import generate_phantom_dataset

    tmp = tmp_path_factory.mktemp("sites")
    a = generate_phantom_dataset(tmp / "site-a", n_train=60, n_valid=40, size=64, seed=3)
    b = generate_phantom_dataset(tmp / "site-b", n_train=50, n_valid=40, size=64, seed=4)
    _blank_columns(b, NEVER)
    return a, b


def test_a_never_labelled_finding_is_masked_for_that_dataset_only(two_sites):
    a, b = two_sites
    sel = DataSelection(root=str(a), more_roots=(str(b),))
    assert sel.never_labelled() == {A_NAME: [], B_NAME: list(NEVER)}
    cols = [CHEXPERT_LABELS.index(c) for c in NEVER]
    for split in ("train", "tune", "valid"):
        arrays = sel.load(split, Preprocess(image_size=32))
        names = np.asarray(arrays.split.dataset)
        from_b = names == B_NAME
        assert from_b.any() and (~from_b).any(), split
        assert (arrays.mask[np.ix_(from_b, cols)] == 0).all()  # not negatives: absent
        assert (arrays.mask[np.ix_(~from_b, cols)] == 1).all()  # site A's labels are kept
        others = [i for i in range(len(CHEXPERT_LABELS)) if i not in cols]
        assert (arrays.mask[np.ix_(from_b, others)] == 1).all()
        # targets() on the split read alone gives the same mask (calibration and eval use it)
        np.testing.assert_array_equal(sel.targets(arrays.split)[1], arrays.mask)
    # Under blank="negative" (the default) a single dataset's never-labelled finding is masked too.
    single = sel.datasets()[1].load("valid", Preprocess(image_size=32))
    assert (single.mask[:, cols] == 0).all()


def test_each_dataset_keeps_its_own_carve_and_patients_stay_apart(two_sites):
    a, b = two_sites
    merged = DataSelection(root=str(a), more_roots=(str(b),))
    for split in ("train", "tune", "valid"):
        pooled = merged.read(split)
        alone = [part.read(split) for part in merged.datasets()]
        assert len(pooled) == sum(len(s) for s in alone)
        # the carve of each dataset is the one it has alone: same images, same order
        assert [str(p) for p in pooled.paths] == [str(p) for s in alone for p in s.paths]
    train, tune = merged.read("train"), merged.read("tune")
    assert not set(train.patients) & set(tune.patients)
    # both phantom sets number patients from 1: the merged keys keep the two people apart
    assert len(set(train.patients)) == sum(
        len(set(s.patients)) for s in (DataSelection(str(a)).read("train"), DataSelection(str(b)).read("train"))
    )


def test_dataset_slices_and_the_record(two_sites):
    a, b = two_sites
    sel = DataSelection(root=str(a), more_roots=(str(b),), dataset_fingerprints={A_NAME: {"train": "x"}})
    valid = sel.read("valid")
    slices = subgroup_rows(valid)
    assert list(slices)[:2] == [f"Dataset: {A_NAME}", f"Dataset: {B_NAME}"]
    assert len(slices[f"Dataset: {A_NAME}"]) + len(slices[f"Dataset: {B_NAME}"]) == len(valid)
    assert not any(k.startswith("Dataset:") for k in subgroup_rows(DataSelection(str(a)).read("valid")))
    d = sel.to_dict()
    assert d["more_roots"] == [str(b)] and DataSelection.from_dict(json.loads(json.dumps(d))) == sel
    assert "more_roots" not in DataSelection(root=str(a)).to_dict()  # one dataset: the record as before
    with pytest.raises(DatasetError, match="given twice"):
        DataSelection(root=str(a), more_roots=(str(a),))


def test_metrics_per_dataset_leave_out_what_a_dataset_never_labels(two_sites):
    from mxa_edge.decision.evaluation import decision_metrics
    from mxa_edge.formats.decision import DecisionRule

    a, b = two_sites
    valid = DataSelection(root=str(a), more_roots=(str(b),)).load("valid", Preprocess(image_size=32))
    logits = np.random.default_rng(0).normal(size=valid.targets.shape) + 2 * valid.targets  # informative
    m = decision_metrics(valid, logits, DecisionRule.uncalibrated(), n_boot=20, seed=0)
    per = m["per_dataset"]
    assert set(per) == {A_NAME, B_NAME}
    assert per[A_NAME]["n_images"] + per[B_NAME]["n_images"] == len(valid)
    for finding in NEVER:
        assert finding not in per[B_NAME]["per_label"]  # masked: no metric for site B
        assert m["per_label"][finding]["n_pos"] + m["per_label"][finding]["n_neg"] == per[A_NAME]["n_images"]
    assert "per_dataset" not in decision_metrics(
        valid.take(np.arange(5)), logits[:5], DecisionRule.uncalibrated(), n_boot=0, seed=0
    )


def test_the_loss_ignores_a_masked_finding():
    torch = pytest.importorskip("torch")
    from mxa_edge.torch_side.training.loss import DistillationLoss

    loss = DistillationLoss()
    logits = torch.zeros(4, 14)
    targets = torch.ones(4, 14)
    mask = torch.ones(4, 14)
    mask[2:, 5] = 0  # rows 2-3 come from a dataset that never labels finding 5
    before = loss.supervised(logits, targets, mask)
    changed = logits.clone()
    changed[2:, 5] = 50.0  # anything at all on the masked cells
    assert torch.equal(loss.supervised(changed, targets, mask), before)
    changed[:2, 5] = 50.0  # the other dataset's cells count
    assert not torch.equal(loss.supervised(changed, targets, mask), before)


@pytest.mark.slow
def test_merged_nih_and_pediatric_train_export_gate(tmp_path):
    """NIH sample + pediatric pneumonia: a tiny merged run trains, exports and is gated per dataset;
    pediatric never labels Lung Opacity, so its slice has no metric for it while NIH's does."""
    pytest.importorskip("torch")
    nih = shared_path("data", "nih-cxr14-sample")
    ped = shared_path("data", "pediatric-pneumonia")
    from mxa_edge.formats import RunRecord
    from mxa_edge.torch_side.export import export_run
    from mxa_edge.torch_side.training.pipeline import train

    run = tmp_path / "run"
    cfg = tiny_config(nih, run, image_size=64, epochs=1, kd=False)
    train(replace(cfg, data=[str(nih), str(ped)]))
    record = RunRecord.load(run)
    assert record.data.more_roots == (str(ped.resolve()),)
    assert set(record.data.dataset_fingerprints) == {nih.name, ped.name}
    assert all(set(v) == {"train", "tune", "valid"} for v in record.data.dataset_fingerprints.values())
    per = record.metrics()["per_dataset"]
    assert "Lung Opacity" in per[nih.name]["per_label"] and "Lung Opacity" not in per[ped.name]["per_label"]
    result = export_run(run, "onnx", tmp_path / "art", n_boot=20)
    drift = json.loads((result.artifact / "drift.json").read_text())
    slices = drift["subgroups"]
    ped_slice, nih_slice = slices[f"Dataset: {ped.name}"], slices[f"Dataset: {nih.name}"]
    assert ped_slice["status"] is None and nih_slice["status"] is None  # both judged
    ped_lo = ped_slice["table"]["per_label"]["Lung Opacity"]
    assert ped_lo["n_pos"] == ped_lo["n_neg"] == 0 and ped_lo["auc_new"] is None  # masked: no metric
    nih_lo = nih_slice["table"]["per_label"]["Lung Opacity"]
    assert nih_lo["n_pos"] > 0 and nih_lo["auc_new"] is not None
    # The input guard: its threshold is the larger of the two datasets' tuning percentiles, and
    # even this one-epoch model's guard flags inverted real films and documents (the image
    # statistics see them whatever the features learned).
    guard = json.loads((result.artifact / "manifest.json").read_text())["guard"]
    assert f"the largest of each dataset's ({nih.name}, {ped.name})" in guard["threshold_rule"]
    assert guard["challenge"]["inverted"]["flagged"] >= 0.9 and guard["challenge"]["document"]["flagged"] >= 0.9
    assert guard["held_out"]["flag_rate_ref"] <= 0.1
