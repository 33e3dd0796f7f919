"""Tests for mxa_edge.decision.metrics, with scikit-learn as the reference implementation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from mxa_edge.decision import metrics
from mxa_edge.labels import CHEXPERT_LABELS

sk = pytest.importorskip("sklearn.metrics")

C = len(CHEXPERT_LABELS)


def _data(n=300, c=C, seed=0, signal=1.0, rounding=1):
    """Random multi-label data with heavy score ties (rounded) and a random mask."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(float)
    logits = signal * (2 * y - 1) + rng.normal(size=(n, c))
    p = np.round(1 / (1 + np.exp(-logits)), rounding)
    m = (rng.random((n, c)) < 0.8).astype(float)
    return y, p, m


def _sk_auc(y, p, m, c):
    keep = m[:, c] == 1
    return sk.roc_auc_score(y[keep, c], p[keep, c])


# ---------------------------------------------------------------------- auc_per_label


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rounding", [1, 2, 6])
def test_auc_per_label_matches_sklearn_with_ties_and_mask(seed, rounding):
    y, p, m = _data(seed=seed, rounding=rounding)
    auc = metrics.auc_per_label(y, p, m)
    assert auc.shape == (C,)
    expected = np.array([_sk_auc(y, p, m, c) for c in range(C)])
    np.testing.assert_allclose(auc, expected, rtol=0, atol=1e-12)


def test_auc_without_mask_and_with_logits():
    y, p, _ = _data(seed=3)
    logits = np.log(p + 1e-3) - np.log(1 - p + 1e-3)
    expected = [sk.roc_auc_score(y[:, c], p[:, c]) for c in range(C)]
    np.testing.assert_allclose(metrics.auc_per_label(y, p), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(metrics.auc_per_label(y, logits), expected, rtol=0, atol=1e-12)


def test_masked_cells_are_never_read():
    y, p, m = _data(seed=4)
    y_dirty, p_dirty = y.copy(), p.copy()
    y_dirty[m == 0] = np.nan  # blank label
    y_dirty[(m == 0) & (p > 0.5)] = -1  # uncertain label
    p_dirty[m == 0] = np.nan
    np.testing.assert_array_equal(metrics.auc_per_label(y_dirty, p_dirty, m), metrics.auc_per_label(y, p, m))


def test_single_class_label_is_nan():
    y, p, m = _data(seed=5)
    y[:, 2] = 0  # one class only
    m[:, 4] = 0  # no rows at all
    y[m[:, 6] == 1, 6] = 1  # one class among unmasked rows, the other only in masked rows
    y[m[:, 6] == 0, 6] = 0
    auc = metrics.auc_per_label(y, p, m)
    assert np.isnan(auc[[2, 4, 6]]).all()
    assert np.isfinite(np.delete(auc, [2, 4, 6])).all()


# ---------------------------------------------------------------------- evaluate


def test_evaluate_is_json_ready_and_macro_excludes_nan_labels():
    y, p, m = _data(seed=6)
    y[:, 2] = 0
    m[:, 4] = 0
    out = metrics.evaluate(y, p, m, n_boot=200)
    json.dumps(out, allow_nan=False)  # never NaN in JSON

    names = list(CHEXPERT_LABELS)
    bad = {names[2], names[4]}
    assert set(out["per_label"]) == set(names)
    assert out["labels_evaluated"] == [n for n in names if n not in bad]
    for n in bad:
        assert out["per_label"][n]["auc"] is None
        assert out["per_label"][n]["auc_ci"] is None
    assert out["per_label"][names[4]]["accuracy"] is None
    assert out["per_label"][names[4]]["n_pos"] == out["per_label"][names[4]]["n_neg"] == 0

    auc = metrics.auc_per_label(y, p, m)
    assert out["macro_auc"] == pytest.approx(np.nanmean(auc), abs=1e-12)
    assert isinstance(out["macro_auc"], float)
    lo, hi = out["macro_auc_ci"]
    assert lo <= out["macro_auc"] <= hi
    assert out["n_images"] == len(y)


def test_evaluate_micro_f1_accuracy_match_sklearn():
    y, p, m = _data(seed=7)
    out = metrics.evaluate(y, p, m, n_boot=0, threshold=0.5)
    keep = m == 1
    assert out["micro_auc"] == pytest.approx(sk.roc_auc_score(y[keep], p[keep]), abs=1e-12)

    f1s, accs = [], []
    for c, name in enumerate(CHEXPERT_LABELS):
        k = keep[:, c]
        pred = (p[k, c] >= 0.5).astype(int)
        f1s.append(sk.f1_score(y[k, c], pred))
        accs.append(sk.accuracy_score(y[k, c], pred))
        row = out["per_label"][name]
        assert row["f1"] == pytest.approx(f1s[-1], abs=1e-12)
        assert row["accuracy"] == pytest.approx(accs[-1], abs=1e-12)
        assert row["n_pos"] == int(y[k, c].sum()) and row["n_neg"] == int((1 - y[k, c]).sum())
        assert row["auc_ci"] is None  # n_boot=0 skips the bootstrap
    assert out["f1_macro"] == pytest.approx(np.mean(f1s), abs=1e-12)
    assert out["accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert out["macro_auc_ci"] is None


def test_evaluate_all_labels_single_class_gives_none():
    y = np.zeros((10, 3))
    p = np.linspace(0, 1, 30).reshape(10, 3)
    out = metrics.evaluate(y, p, labels=["a", "b", "c"], n_boot=50)
    json.dumps(out, allow_nan=False)
    assert out["macro_auc"] is None and out["macro_auc_ci"] is None
    assert out["micro_auc"] is None and out["f1_macro"] is None
    assert out["labels_evaluated"] == []
    assert out["accuracy"] is not None and out["ece"] is not None


def test_labels_required_unless_14_columns():
    y, p, m = _data(c=3)
    with pytest.raises(ValueError, match="pass labels"):
        metrics.evaluate(y, p, m, n_boot=0)
    out = metrics.evaluate(y, p, m, labels=["x", "y", "z"], n_boot=0)
    assert list(out["per_label"]) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="columns"):
        metrics.evaluate(y, p, m, labels=["x", "y"], n_boot=0)


# ---------------------------------------------------------------------- calibration


def test_ece_hand_computed():
    # Four cells at 0.9 with one positive, two cells at 0.1 with none; one masked row of junk.
    y = np.array([[1, 0], [0, 0], [0, 0], [np.nan, -1]])
    p = np.array([[0.9, 0.9], [0.9, 0.9], [0.1, 0.1], [np.nan, 0.5]])
    m = np.array([[1, 1], [1, 1], [1, 1], [0, 0]])
    expected = (4 * abs(0.9 - 0.25) + 2 * abs(0.1 - 0.0)) / 6
    out = metrics.evaluate(y, p, m, labels=["a", "b"], n_boot=0)
    assert out["ece"] == pytest.approx(expected, abs=1e-12)

    curve = metrics.reliability_curve(y, p, m)
    assert curve["ece"] == pytest.approx(expected, abs=1e-12)
    assert curve["n"] == 6 and sum(curve["counts"]) == 6
    assert curve["counts"][1] == 2 and curve["counts"][13] == 4  # 0.1 -> bin 1, 0.9 -> bin 13 of 15
    assert curve["mean_predicted"][13] == pytest.approx(0.9)
    assert curve["observed_frequency"][13] == pytest.approx(0.25)
    assert curve["mean_predicted"][0] is None and curve["observed_frequency"][0] is None
    assert len(curve["bin_centers"]) == 15 and curve["bin_centers"][0] == pytest.approx(1 / 30)
    json.dumps(curve, allow_nan=False)


def test_reliability_curve_edges_go_to_end_bins():
    curve = metrics.reliability_curve(np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]]), n_bins=4)
    assert curve["counts"] == [1, 0, 0, 1]
    assert curve["ece"] == 0.0


def test_ece_calibrated_small_overconfident_large():
    rng = np.random.default_rng(8)
    true_p = rng.random((3000, C))
    y = (rng.random(true_p.shape) < true_p).astype(float)
    calibrated = metrics.evaluate(y, true_p, n_boot=0)["ece"]
    overconfident = np.where(true_p > 0.5, 0.99, 0.01)
    over = metrics.evaluate(y, overconfident, n_boot=0)["ece"]
    assert calibrated < 0.02
    assert over > 0.2


def test_calibration_rejects_non_probabilities():
    y, p, _ = _data(c=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.reliability_curve(y, p * 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.evaluate(y, p - 2, labels=["a", "b"], n_boot=0)


# ---------------------------------------------------------------------- bootstrap


def test_bootstrap_matches_naive_resampling():
    y, p, m = _data(n=60, seed=9)
    n_boot = 40
    boot = metrics.bootstrap_auc(y, p, m, n_boot=n_boot, seed=11)
    assert boot.shape == (C, n_boot)
    idx = np.random.default_rng(11).integers(0, len(y), size=(n_boot, len(y)))
    for b in range(n_boot):
        yb, pb, mb = y[idx[b]], p[idx[b]], m[idx[b]]
        for c in range(C):
            keep = mb[:, c] == 1
            if len(np.unique(yb[keep, c])) < 2:
                assert np.isnan(boot[c, b])
            else:
                assert boot[c, b] == pytest.approx(sk.roc_auc_score(yb[keep, c], pb[keep, c]), abs=1e-12)


def test_bootstrap_seeded_and_rare_label_gives_nan_resamples():
    y, p, m = _data(n=200, seed=10)
    y[:, 0] = 0
    y[0, 0], m[0, 0] = 1, 1  # a single positive: absent from ~37% of resamples
    a = metrics.bootstrap_auc(y, p, m, n_boot=300, seed=3)
    np.testing.assert_array_equal(a, metrics.bootstrap_auc(y, p, m, n_boot=300, seed=3))
    assert 0.2 < np.isnan(a[0]).mean() < 0.55
    assert np.isfinite(a[1:]).all()
    assert metrics.bootstrap_auc(y, p, m, n_boot=0).shape == (C, 0)


def test_bootstrap_ci_contains_point_and_shrinks_with_more_data():
    widths = []
    for n in (100, 2000):
        y, p, m = _data(n=n, seed=12, rounding=3)
        out = metrics.evaluate(y, p, m, n_boot=300, seed=0)
        for row in out["per_label"].values():
            lo, hi = row["auc_ci"]
            assert lo <= row["auc"] <= hi
        lo, hi = out["macro_auc_ci"]
        assert lo <= out["macro_auc"] <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_fast():
    y, p, m = _data(n=400, seed=13, rounding=3)
    start = time.perf_counter()
    boot = metrics.bootstrap_auc(y, p, m, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 2.0
    assert boot.shape == (C, 1000)


# ---------------------------------------------------------------------- paired delta


def test_paired_delta_identical_predictions_is_exactly_zero():
    y, p, m = _data(seed=14)
    out = metrics.paired_auc_delta(y, p, p.copy(), m, n_boot=200)
    json.dumps(out, allow_nan=False)
    for row in out["per_label"].values():
        assert row["delta"] == 0.0
        assert row["delta_ci"] == [0.0, 0.0]
        assert row["agreement_at_threshold"] == 1.0
        assert row["auc_ref"] == row["auc_new"]
    assert out["macro_delta"] == 0.0 and out["macro_delta_ci"] == [0.0, 0.0]
    assert out["agreement_at_threshold"] == 1.0


def test_paired_delta_detects_degraded_model():
    rng = np.random.default_rng(15)
    y, _, m = _data(n=400, seed=15)
    logits = 1.5 * (2 * y - 1) + rng.normal(size=y.shape)
    ref = 1 / (1 + np.exp(-logits))
    new = 1 / (1 + np.exp(-(logits + rng.normal(scale=2.0, size=y.shape))))
    out = metrics.paired_auc_delta(y, ref, new, m, n_boot=500, seed=1)
    assert out["macro_delta"] < 0
    lo, hi = out["macro_delta_ci"]
    assert lo <= out["macro_delta"] <= hi < 0
    excluded = [row["delta_ci"][1] < 0 for row in out["per_label"].values()]
    assert sum(excluded) >= 10

    auc_ref = metrics.auc_per_label(y, ref, m)
    auc_new = metrics.auc_per_label(y, new, m)
    name = CHEXPERT_LABELS[3]
    assert out["per_label"][name]["delta"] == pytest.approx(auc_new[3] - auc_ref[3], abs=1e-12)
    keep = m[:, 3] == 1
    agree = np.mean((ref[keep, 3] >= 0.5) == (new[keep, 3] >= 0.5))
    assert out["per_label"][name]["agreement_at_threshold"] == pytest.approx(agree)
    assert out["agreement_at_threshold"] == pytest.approx(np.mean(((ref >= 0.5) == (new >= 0.5))[m == 1]))


def test_paired_delta_unevaluable_label_is_none():
    y, p, m = _data(seed=16)
    y[:, 5] = 1
    out = metrics.paired_auc_delta(y, p, np.clip(p + 0.05, 0, 1), m, n_boot=50)
    json.dumps(out, allow_nan=False)
    row = out["per_label"][CHEXPERT_LABELS[5]]
    assert row["auc_ref"] is None and row["delta"] is None and row["delta_ci"] is None
    assert row["agreement_at_threshold"] is not None
    assert CHEXPERT_LABELS[5] not in out["labels_evaluated"]


# ---------------------------------------------------------------------- boxes


def test_box_coverage_hand_computed():
    pred = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.6, 0.6, 0.8, 0.8], [0.1, 0.2, 0.3, 0.4]]
    gt = [[0.25, 0.25, 0.75, 0.75], [0.2, 0.2, 0.4, 0.4], [0.1, 0.1, 0.3, 0.3], [0.1, 0.2, 0.3, 0.4]]
    # Coverage: quarter of gt inside; all inside; none; identical boxes.
    # Hit: centre (0.5, 0.5) on the pred edge counts; yes; no; yes.
    # IoU: 0.0625 / 0.4375 = 1/7; 0.04 / 1; 0; 1.
    out = metrics.box_coverage(pred, gt)
    assert out["n"] == 4
    assert out["mean_coverage"] == pytest.approx((0.25 + 1 + 0 + 1) / 4)
    assert out["hit_rate"] == pytest.approx(3 / 4)
    assert out["mean_iou"] == pytest.approx((1 / 7 + 0.04 + 0 + 1) / 4)
    json.dumps(out, allow_nan=False)


def test_box_coverage_errors_and_empty():
    assert metrics.box_coverage(np.zeros((0, 4)), np.zeros((0, 4)))["mean_coverage"] is None
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(1, 4\)"):
        metrics.box_coverage([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="x1 <= x2"):
        metrics.box_coverage([[0.5, 0, 0.2, 1]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="zero area"):
        metrics.box_coverage([[0, 0, 1, 1]], [[0.2, 0.2, 0.2, 0.5]])
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        metrics.box_coverage([[0, 0, 1]], [[0, 0, 1, 1]])


def test_localization_vs_baselines_hand_computed_with_paired_gain():
    # Two images; image 0 has two ground-truth boxes. The model's box covers both of image 0's
    # boxes and misses image 1's; the baseline covers only image 1's.
    gt = [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4], [0.7, 0.7, 0.8, 0.8]]
    image = [0, 0, 1]
    model = [[0.0, 0.0, 0.5, 0.5]] * 2 + [[0.0, 0.0, 0.5, 0.5]]
    baseline = [[0.5, 0.5, 1.0, 1.0]] * 3
    out = metrics.localization_vs_baselines(gt, image, {"model": model, "base": baseline}, "model", n_boot=500)
    assert out["model"]["hit_rate"] == pytest.approx(2 / 3) and out["base"]["hit_rate"] == pytest.approx(1 / 3)
    assert out["model"]["mean_coverage"] == pytest.approx(2 / 3)
    # IoU of a 0.1-side box inside a 0.5-side box: 0.01 / 0.25.
    assert out["model"]["mean_iou"] == pytest.approx(2 / 3 * 0.04)
    gain = out["base"]["model_minus_this"]
    assert gain["hit_rate"]["delta"] == pytest.approx(1 / 3)
    assert "model_minus_this" not in out["model"]
    assert out["n_images"] == 2 and out["model"]["n"] == 3
    # Resampling whole images: a resample holds image 0 (2 boxes), image 1 (1 box) or both, so
    # the model's hit rate is one of 1, 0, 2/3 (both once each), 4/5 or 1/2 (one drawn twice).
    lo, hi = out["model"]["hit_rate_ci"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    json.dumps(out, allow_nan=False)


def test_localization_bootstrap_resamples_images_not_boxes():
    # Every box in one image: every resample draws that image, so the CIs have no width,
    # whereas resampling boxes would have spread them.
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 0.5, size=(40, 2))
    gt = np.concatenate([corner, corner + 0.2], axis=1)
    pred = np.tile([0.0, 0.0, 0.5, 0.5], (40, 1))
    out = metrics.localization_vs_baselines(gt, np.zeros(40), {"model": pred}, "model", n_boot=200)
    lo, hi = out["model"]["mean_coverage_ci"]
    assert lo == pytest.approx(hi) == pytest.approx(out["model"]["mean_coverage"])
    none = metrics.localization_vs_baselines(gt, np.zeros(40), {"model": pred}, "model", n_boot=0)
    assert none["model"]["mean_iou_ci"] is None


def test_random_boxes_keep_size_stay_inside_and_give_the_chance_level():
    pred = np.array([[0.1, 0.2, 0.6, 0.7], [0.0, 0.0, 0.3, 0.9]])
    draws = metrics.random_boxes_like(pred, 4000, np.random.default_rng(1))
    assert draws.shape == (4000, 2, 4)
    np.testing.assert_allclose(
        draws[..., 2:] - draws[..., :2], np.broadcast_to(pred[:, 2:] - pred[:, :2], (4000, 2, 2))
    )
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    same = metrics.random_boxes_like(pred, 4000, np.random.default_rng(1))
    np.testing.assert_array_equal(draws, same)
    # A 0.5 x 0.5 box with its corner uniform in [0, 0.5]^2 contains the point (0.1, 0.1) only when
    # both corner coordinates are <= 0.1: probability (0.1 / 0.5)^2 = 0.04.
    half = np.array([[0.25, 0.25, 0.75, 0.75]])
    gt = np.array([[0.09, 0.09, 0.11, 0.11]])
    chance = metrics.random_boxes_like(half, 20000, np.random.default_rng(2))
    out = metrics.localization_vs_baselines(gt, [0], {"model": half, "random": chance}, "model", n_boot=0)
    assert out["random"]["hit_rate"] == pytest.approx(0.04, abs=0.005)
    assert out["model"]["hit_rate"] == 0.0


def test_localization_errors():
    gt = [[0.1, 0.1, 0.2, 0.2]]
    with pytest.raises(ValueError, match="reference 'model'"):
        metrics.localization_vs_baselines(gt, [0], {"other": gt}, "model")
    with pytest.raises(ValueError, match="image_index"):
        metrics.localization_vs_baselines(gt, [0, 1], {"model": gt}, "model")
    with pytest.raises(ValueError, match="draws"):
        metrics.random_boxes_like(gt, 0, np.random.default_rng(0))


# ---------------------------------------------------------------------- input errors


def test_shape_mismatch_names_the_shapes():
    y, p, m = _data(n=20)
    with pytest.raises(ValueError, match=r"\(19, 14\).*\(20, 14\)"):
        metrics.auc_per_label(y, p[:19])
    with pytest.raises(ValueError, match=r"mask has shape \(20, 13\)"):
        metrics.evaluate(y, p, m[:, :13])
    with pytest.raises(ValueError, match=r"prob_new has shape \(20, 13\)"):
        metrics.paired_auc_delta(y, p, p[:, :13])
    with pytest.raises(ValueError, match=r"2-D.*\(20,\)"):
        metrics.auc_per_label(y[:, 0], p[:, 0])


def test_bad_values_are_rejected_with_a_fix():
    y, p, m = _data(n=20)
    y[3, 2] = -1
    with pytest.raises(ValueError, match="mask=0"):
        metrics.auc_per_label(y, p)
    y[3, 2] = 0
    p[1, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        metrics.auc_per_label(y, p)
    with pytest.raises(ValueError, match="mask must"):
        metrics.auc_per_label(y, np.nan_to_num(p), m * 2)
    with pytest.raises(ValueError, match="n_boot"):
        metrics.bootstrap_auc(y, np.nan_to_num(p), n_boot=-1)


# ---------------------------------------------------------------------- operating points


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_sensitivity_specificity_match_sklearn_recall_at_per_label_thresholds():
    y, p, m = _data(seed=17, rounding=2)
    thresholds = np.linspace(0.2, 0.8, C)
    out = metrics.evaluate(y, p, m, n_boot=0, threshold=thresholds)
    json.dumps(out, allow_nan=False)
    assert out["threshold"] == pytest.approx(list(thresholds)) and isinstance(out["threshold"], list)
    for c, name in enumerate(CHEXPERT_LABELS):
        k = m[:, c] == 1
        pred = (p[k, c] >= thresholds[c]).astype(int)
        row = out["per_label"][name]
        assert row["threshold"] == thresholds[c]
        assert row["sensitivity"] == pytest.approx(sk.recall_score(y[k, c], pred), abs=1e-12)
        assert row["specificity"] == pytest.approx(sk.recall_score(y[k, c], pred, pos_label=0), abs=1e-12)
        assert row["f1"] == pytest.approx(sk.f1_score(y[k, c], pred), abs=1e-12)
        assert row["accuracy"] == pytest.approx(sk.accuracy_score(y[k, c], pred), abs=1e-12)
        assert row["sensitivity_ci"] is None and row["specificity_ci"] is None  # n_boot=0


def test_per_label_thresholds_are_honoured_hand_made():
    # Two labels with the same scores; label a at 0.3, label b at 0.7.
    y = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=float)
    p = np.array([[0.8, 0.8], [0.4, 0.4], [0.5, 0.5], [0.2, 0.2]])
    out = metrics.evaluate(y, p, labels=["a", "b"], n_boot=0, threshold=[0.3, 0.7])
    a, b = out["per_label"]["a"], out["per_label"]["b"]
    assert (a["sensitivity"], a["specificity"]) == (1.0, 0.5)  # 0.8, 0.4 caught; 0.5 a false alarm
    assert (b["sensitivity"], b["specificity"]) == (0.5, 1.0)  # only 0.8 called positive
    assert (a["threshold"], b["threshold"]) == (0.3, 0.7)
    assert a["accuracy"] == b["accuracy"] == 0.75
    scalar = metrics.evaluate(y, p, labels=["a", "b"], n_boot=0, threshold=0.45)
    assert scalar["threshold"] == 0.45 and scalar["per_label"]["b"]["threshold"] == 0.45
    with pytest.raises(ValueError, match=r"one per label \(2 values\)"):
        metrics.evaluate(y, p, labels=["a", "b"], n_boot=0, threshold=[0.3, 0.5, 0.7])
    with pytest.raises(ValueError, match="finite"):
        metrics.evaluate(y, p, labels=["a", "b"], n_boot=0, threshold=[0.3, np.nan])


def test_sensitivity_specificity_cis_contain_point_and_are_none_when_undefined():
    y, p, m = _data(n=400, seed=18, rounding=3)
    y[:, 2] = 0  # no positives: sensitivity undefined, specificity defined
    y[:, 3] = 1  # no negatives
    out = metrics.evaluate(y, p, m, n_boot=300, seed=2)
    json.dumps(out, allow_nan=False)
    for c, row in enumerate(out["per_label"].values()):
        for key in ("sensitivity", "specificity"):
            if (c == 2 and key == "sensitivity") or (c == 3 and key == "specificity"):
                assert row[key] is None and row[key + "_ci"] is None
            else:
                lo, hi = row[key + "_ci"]
                assert lo <= row[key] <= hi


def test_evaluate_sensitivity_ci_matches_naive_resampling():
    y, p, m = _data(n=60, seed=19)
    n_boot, seed = 40, 5
    out = metrics.evaluate(y, p, m, n_boot=n_boot, seed=seed, threshold=0.4)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    for c, name in enumerate(CHEXPERT_LABELS):
        sens, spec = [], []
        for b in range(n_boot):
            keep = m[idx[b], c] == 1
            yb, pred = y[idx[b], c][keep], p[idx[b], c][keep] >= 0.4
            if (yb == 1).any():
                sens.append(np.mean(pred[yb == 1]))
            if (yb == 0).any():
                spec.append(np.mean(~pred[yb == 0]))
        row = out["per_label"][name]
        np.testing.assert_allclose(row["sensitivity_ci"], np.percentile(sens, [2.5, 97.5]), atol=1e-12)
        np.testing.assert_allclose(row["specificity_ci"], np.percentile(spec, [2.5, 97.5]), atol=1e-12)


def test_ece_of_a_resample_equals_reliability_curve_on_duplicated_rows():
    y, p, m = _data(n=80, seed=20, rounding=3)
    yt, mb, s = metrics._prepare(y, m, p=p)
    rows = metrics._ece_row_sums(yt, s["p"], mb)
    assert rows.shape == (80, metrics.ECE_BINS + 1)
    w = np.random.default_rng(0).integers(0, 4, size=80)  # explicit integer draw counts
    ece = metrics._ece_from_sums(w[None, :].astype(float) @ rows)[0]
    dup = np.repeat(np.arange(80), w)
    assert ece == pytest.approx(metrics.reliability_curve(y[dup], p[dup], m[dup])["ece"], abs=1e-12)
    # Unit weights give the point estimate; all-zero weights have no cells.
    assert metrics._ece_from_sums(rows.sum(axis=0, keepdims=True))[0] == pytest.approx(
        metrics.reliability_curve(y, p, m)["ece"], abs=1e-12
    )
    assert np.isnan(metrics._ece_from_sums(np.zeros((1, rows.shape[1])))[0])


def test_paired_threshold_and_ece_cis_match_naive_resampling():
    y, _, m = _data(n=60, seed=21)
    rng = np.random.default_rng(21)
    logits = 1.5 * (2 * y - 1) + rng.normal(size=y.shape)
    ref = metrics.sigmoid(logits)
    new = metrics.sigmoid(logits + rng.normal(scale=0.7, size=y.shape))
    n_boot, seed = 40, 3
    thr = np.linspace(0.3, 0.7, C)
    out = metrics.paired_auc_delta(y, ref, new, m, n_boot=n_boot, seed=seed, threshold=thr)
    json.dumps(out, allow_nan=False)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    ece_delta = []
    for b in range(n_boot):
        yb, rb, nb, mb = y[idx[b]], ref[idx[b]], new[idx[b]], m[idx[b]]
        ece_delta.append(metrics.reliability_curve(yb, nb, mb)["ece"] - metrics.reliability_curve(yb, rb, mb)["ece"])
    np.testing.assert_allclose(out["ece_delta_ci"], np.percentile(ece_delta, [2.5, 97.5]), atol=1e-12)
    assert out["ece_ref"] == metrics.evaluate(y, ref, m, n_boot=0)["ece"]
    assert out["ece_delta"] == pytest.approx(out["ece_new"] - out["ece_ref"], abs=1e-15)
    for c, name in enumerate(CHEXPERT_LABELS):
        sens_d, spec_d, agree = [], [], []
        for b in range(n_boot):
            keep = m[idx[b], c] == 1
            yb = y[idx[b], c][keep]
            pr, pn = ref[idx[b], c][keep] >= thr[c], new[idx[b], c][keep] >= thr[c]
            if (yb == 1).any():
                sens_d.append(np.mean(pn[yb == 1]) - np.mean(pr[yb == 1]))
            if (yb == 0).any():
                spec_d.append(np.mean(~pn[yb == 0]) - np.mean(~pr[yb == 0]))
            if keep.any():
                agree.append(np.mean(pr == pn))
        row = out["per_label"][name]
        assert row["threshold"] == thr[c]
        np.testing.assert_allclose(row["sensitivity_delta_ci"], np.percentile(sens_d, [2.5, 97.5]), atol=1e-12)
        np.testing.assert_allclose(row["specificity_delta_ci"], np.percentile(spec_d, [2.5, 97.5]), atol=1e-12)
        np.testing.assert_allclose(row["agreement_ci"], np.percentile(agree, [2.5, 97.5]), atol=1e-12)
        k = m[:, c] == 1
        pos, neg = k & (y[:, c] == 1), k & (y[:, c] == 0)
        assert row["sensitivity_ref"] == pytest.approx(np.mean(ref[pos, c] >= thr[c]), abs=1e-12)
        assert row["specificity_new"] == pytest.approx(np.mean(new[neg, c] < thr[c]), abs=1e-12)
        assert row["sensitivity_delta"] == pytest.approx(row["sensitivity_new"] - row["sensitivity_ref"], abs=1e-15)


def test_shifted_logits_keep_auc_but_move_decisions():
    y, _, m = _data(n=400, seed=22)
    rng = np.random.default_rng(22)
    logits = 1.5 * (2 * y - 1) + rng.normal(size=y.shape)
    shifted = logits.copy()
    shifted[:, 4] += 1.0  # same ranking, more positive calls
    out = metrics.paired_auc_delta(y, metrics.sigmoid(logits), metrics.sigmoid(shifted), m, n_boot=200)
    row = out["per_label"][CHEXPERT_LABELS[4]]
    assert row["delta"] == 0.0 and row["delta_ci"] == [0.0, 0.0]
    assert row["sensitivity_delta"] > 0 and row["specificity_delta"] < 0
    assert row["sensitivity_delta_ci"][1] > 0 and row["specificity_delta_ci"][0] < 0
    assert row["agreement_at_threshold"] < 1
    lo, hi = row["agreement_ci"]
    assert lo <= row["agreement_at_threshold"] <= hi < 1
    assert out["ece_delta"] != 0
    for name in CHEXPERT_LABELS[:4]:
        other = out["per_label"][name]
        assert other["sensitivity_delta"] == other["specificity_delta"] == 0.0
        assert other["agreement_at_threshold"] == 1.0


def test_decision_preserving_transform_gives_zero_threshold_deltas():
    y, p, m = _data(seed=23, rounding=3)
    p = np.clip(p, 0.001, 0.999)
    thr = 0.5
    sharpened = metrics.sigmoid(3 * _logit(p))  # monotone, fixes 0.5: every decision is kept
    out = metrics.paired_auc_delta(y, p, sharpened, m, n_boot=100, threshold=thr)
    for row in out["per_label"].values():
        assert row["sensitivity_delta"] == row["specificity_delta"] == 0.0
        assert row["sensitivity_delta_ci"] == row["specificity_delta_ci"] == [0.0, 0.0]
        assert row["agreement_at_threshold"] == 1.0 and row["agreement_ci"] == [1.0, 1.0]
    assert out["agreement_at_threshold"] == 1.0
    # Calibration does move (these scores are under-confident, so sharpening helps): only ECE shows it.
    lo, hi = out["ece_delta_ci"]
    assert lo <= out["ece_delta"] <= hi < 0


def test_paired_n_boot_zero_gives_no_cis_and_rejects_logits():
    y, p, m = _data(seed=24)
    out = metrics.paired_auc_delta(y, p, np.clip(p + 0.1, 0, 1), m, n_boot=0, threshold=[0.5] * C)
    json.dumps(out, allow_nan=False)
    assert out["threshold"] == [0.5] * C
    assert out["ece_delta_ci"] is None and out["macro_delta_ci"] is None
    assert out["ece_delta"] is not None
    for row in out["per_label"].values():
        for key in ("delta_ci", "agreement_ci", "sensitivity_delta_ci", "specificity_delta_ci"):
            assert row[key] is None
        assert row["sensitivity_delta"] is not None
    with pytest.raises(ValueError, match=r"prob_new must be probabilities in \[0, 1\]"):
        metrics.paired_auc_delta(y, p, _logit(np.clip(p, 0.01, 0.99)), m, n_boot=0)


def test_paired_identical_predictions_have_zero_threshold_and_ece_deltas():
    y, p, m = _data(seed=25)
    out = metrics.paired_auc_delta(y, p, p.copy(), m, n_boot=100)
    assert out["ece_delta"] == 0.0 and out["ece_delta_ci"] == [0.0, 0.0]
    assert out["threshold"] == 0.5
    for row in out["per_label"].values():
        assert row["sensitivity_ref"] == row["sensitivity_new"]
        assert row["sensitivity_delta_ci"] == [0.0, 0.0] and row["agreement_ci"] == [1.0, 1.0]
