"""Tests for mxa_edge.decision.operating: Platt calibration and operating-point thresholds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mxa_edge.decision import metrics, operating
from mxa_edge.decision.operating import (
    DEFAULT_POLICY,
    OperatingPolicy,
    PlattFit,
    ThresholdFit,
    apply_platt,
    fit_platt,
    fit_thresholds,
    parse_policy,
)
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError

pytest.importorskip("sklearn")

C = len(CHEXPERT_LABELS)


def _miscalibrated(n=4000, c=3, seed=0):
    """Targets drawn from sigmoid(true logit); the model's logits are 3 * true + 2 (over-confident, biased)."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(scale=1.5, size=(n, c))
    y = (rng.random((n, c)) < metrics.sigmoid(true_logit)).astype(float)
    return 3.0 * true_logit + 2.0, y


# ---------------------------------------------------------------------- Platt


def test_platt_repairs_calibration_and_keeps_auc_exactly():
    logits, y = _miscalibrated()
    names = ["a", "b", "c"]
    tune, held = slice(0, 2000), slice(2000, None)
    fit = fit_platt(logits[tune], y[tune], None, labels=names)
    assert fit.notes == {} and fit.labels == tuple(names)
    np.testing.assert_allclose(fit.scale, 1 / 3, rtol=0.15)  # recovers the true map
    np.testing.assert_allclose(fit.bias, -2 / 3, atol=0.2)

    raw = metrics.sigmoid(logits[held])
    calibrated = fit.apply(logits[held])
    assert calibrated.dtype == np.float64
    ece_raw = metrics.evaluate(y[held], raw, labels=names, n_boot=0)["ece"]
    ece_cal = metrics.evaluate(y[held], calibrated, labels=names, n_boot=0)["ece"]
    assert ece_raw > 0.08 and ece_cal < 0.03
    np.testing.assert_array_equal(
        metrics.auc_per_label(y[held], calibrated), metrics.auc_per_label(y[held], logits[held])
    )


def test_platt_identity_with_a_note_for_one_class_and_inverted_labels():
    logits, y = _miscalibrated(n=500, c=4, seed=1)
    m = np.ones_like(y)
    y[:, 1] = 0  # one class
    y[:, 2] = 0
    y[0, 2] = 1  # a single positive: too few to fit a slope and an intercept
    logits[:, 3] = -logits[:, 3]  # ranks backwards: a positive scale cannot fit
    fit = fit_platt(logits, y, m, labels=["w", "x", "y", "z"])
    assert "w" not in fit.notes and fit.scale[0] != 1.0
    for c, name in enumerate(["x", "y", "z"], start=1):
        assert fit.scale[c] == 1.0 and fit.bias[c] == 0.0
        assert fit.notes[name].startswith("identity:")
    assert "0 positive" in fit.notes["x"] and "1 positive" in fit.notes["y"]
    assert "not positive" in fit.notes["z"]
    np.testing.assert_array_equal(fit.apply(logits)[:, 1], metrics.sigmoid(logits[:, 1]))


def test_platt_requires_labels_unless_14_columns_and_ignores_masked_cells():
    logits, y = _miscalibrated(n=300, c=C, seed=2)
    m = np.ones_like(y)
    m[:50] = 0
    dirty_logits, dirty_y = logits.copy(), y.copy()
    dirty_logits[:50], dirty_y[:50] = np.nan, -1
    fit = fit_platt(dirty_logits, dirty_y, m)
    assert fit.labels == CHEXPERT_LABELS
    assert fit == fit_platt(logits[50:], y[50:], None)
    with pytest.raises(ValueError, match="pass labels"):
        fit_platt(logits[:, :3], y[:, :3], None)


def test_apply_platt_shapes_and_saturation():
    out = apply_platt(np.array([[-1000.0, 0.0], [1000.0, 2.0]]), [1.0, 2.0], [0.0, -4.0])
    assert out.dtype == np.float64 and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [[0.0, metrics.sigmoid(-4.0)], [1.0, 0.5]])
    with pytest.raises(ValueError, match="2 labels"):
        apply_platt(np.zeros((3, 3)), [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="scale and bias"):
        apply_platt(np.zeros((3, 2)), [1.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="ranking"):
        PlattFit(scale=(1.0, -0.5), bias=(0.0, 0.0))


def test_platt_round_trips_through_json():
    logits, y = _miscalibrated(n=400, c=2, seed=3)
    y[:, 1] = 1
    fit = fit_platt(logits, y, None, labels=["p", "q"])
    back = PlattFit.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
    assert back == fit
    np.testing.assert_array_equal(back.apply(logits), fit.apply(logits))


# ---------------------------------------------------------------------- policies


def test_parse_policy_accepts_the_four_forms_and_prints_them_back():
    assert parse_policy("youden") == OperatingPolicy("youden")
    assert parse_policy(" F1 ") == OperatingPolicy("f1")
    assert parse_policy("sens:0.9") == OperatingPolicy("sens", 0.9)
    assert str(parse_policy("sens:0.9")) == "sens:0.90"
    assert str(parse_policy("spec:0.95")) == "spec:0.95"
    assert str(parse_policy("spec:0.975")) == "spec:0.975"
    assert str(parse_policy(DEFAULT_POLICY)) == "youden"
    for text in ("youden", "f1", "sens:0.90", "spec:0.05", "sens:0.975"):
        assert str(parse_policy(text)) == text
        assert parse_policy(str(parse_policy(text))) == parse_policy(text)
    policy = parse_policy("sens:0.80")
    assert parse_policy(policy) is policy


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yuoden",
        "sens",
        "sens:",
        "sens:abc",
        "sens:0",
        "sens:1",
        "spec:1.5",
        "spec:-0.1",
        "sens:nan",
        "f1:0.5",
        "ppv:0.9",
    ],
)
def test_parse_policy_rejects_bad_text_with_the_accepted_forms(text):
    with pytest.raises(ConfigError) as err:
        parse_policy(text)
    message = str(err.value)
    assert "\n" not in message
    assert "youden, f1, sens:X or spec:X" in message and "(0, 1)" in message


def test_operating_policy_validates_direct_construction():
    with pytest.raises(ConfigError):
        OperatingPolicy("sens")
    with pytest.raises(ConfigError):
        OperatingPolicy("youden", 0.5)
    with pytest.raises(ConfigError):
        OperatingPolicy("recall", 0.5)


# ---------------------------------------------------------------------- thresholds

# Scores in sixteenths, so every midpoint is exact. Candidates (threshold = score, positive when >=):
#   score/16   1     2     3     4     6     7     8     9
#   y          0     0     1     0     1     0     1     1
#   sens       1     1     1    .75   .75   .5    .5    .25
#   spec       0    .25   .5    .5    .75   .75    1     1
#   J          0    .25   .5    .25   .5    .25   .5    .25
#   F1        8/12  8/11  8/10  6/9   6/8   4/7   4/6   2/5
HAND_P = np.array([1, 2, 3, 4, 6, 7, 8, 9]) / 16
HAND_Y = np.array([0, 0, 1, 0, 1, 0, 1, 1], dtype=float)


@pytest.mark.parametrize(
    "policy, threshold16, sens, spec",
    [
        ("youden", 7.5, 0.5, 1.0),  # J ties at 3, 6 and 8: the highest (8), halfway down to 7
        ("f1", 2.5, 1.0, 0.5),  # F1 peaks at 3: halfway down to 2
        ("sens:0.75", 5.0, 0.75, 0.75),  # highest score with sens >= .75 is 6: halfway down to 4
        ("sens:0.90", 2.5, 1.0, 0.5),  # highest with sens >= .9 is 3
        ("spec:0.75", 5.0, 0.75, 0.75),  # lowest with spec >= .75 is 6
        ("spec:0.90", 7.5, 0.5, 1.0),  # lowest with spec >= .9 is 8
        ("spec:0.20", 1.5, 1.0, 0.25),  # lowest with spec >= .2 is 2
    ],
)
def test_each_policy_on_a_hand_made_label(policy, threshold16, sens, spec):
    fit = fit_thresholds(HAND_P[:, None], HAND_Y[:, None], None, policy, labels=["a"])
    row = fit.per_label["a"]
    assert fit.thresholds == (threshold16 / 16,)
    assert row == {
        "threshold": threshold16 / 16,
        "sensitivity": sens,
        "specificity": spec,
        "n_pos": 4,
        "n_neg": 4,
        "source": "fitted",
    }
    assert fit.policy == str(parse_policy(policy))


def test_lowest_score_is_its_own_threshold_and_adjacent_floats_never_flip():
    # With the lowest row positive, sens:0.99 needs every row called positive: the lowest
    # score has no lower neighbour and is the threshold.
    y = HAND_Y.copy()
    y[0] = 1
    fit = fit_thresholds(HAND_P[:, None], y[:, None], None, "sens:0.99", labels=["a"])
    assert fit.thresholds == (1 / 16,)
    assert (fit.per_label["a"]["sensitivity"], fit.per_label["a"]["specificity"]) == (1.0, 0.0)
    # Two adjacent floats: the midpoint would round onto the lower one; the upper is used.
    lo = 0.5
    hi = float(np.nextafter(lo, 1.0))
    p = np.array([[lo], [hi]])
    fit = fit_thresholds(p, np.array([[0.0], [1.0]]), None, "youden", labels=["a"])
    assert fit.thresholds == (hi,)
    assert fit.per_label["a"]["sensitivity"] == fit.per_label["a"]["specificity"] == 1.0


def test_thresholds_sit_between_scores_so_tiny_changes_keep_every_decision():
    rng = np.random.default_rng(4)
    y = (rng.random((500, 3)) < 0.3).astype(float)
    p = np.round(metrics.sigmoid(1.5 * (2 * y - 1) + rng.normal(size=y.shape)), 3)  # ties
    for policy in ("youden", "f1", "sens:0.90", "spec:0.90"):
        fit = fit_thresholds(p, y, None, policy, labels=["a", "b", "c"])
        t = np.array(fit.thresholds)
        assert not np.any(p == t), policy  # no tuning row sits on its threshold
        for eps in (-1e-9, 1e-9):
            np.testing.assert_array_equal(p + eps >= t, p >= t)
        for c, row in enumerate(fit.per_label.values()):
            pred = p[:, c] >= t[c]
            assert row["sensitivity"] == np.mean(pred[y[:, c] == 1])
            assert row["specificity"] == np.mean(~pred[y[:, c] == 0])


def _brute_force(p, y, policy):
    """The rule, checked candidate by candidate: (chosen score, sens, spec)."""
    rows = []
    for s in np.unique(p):
        pred = p >= s
        tp, fp = np.sum(pred & (y == 1)), np.sum(pred & (y == 0))
        n_pos, n_neg = np.sum(y == 1), np.sum(y == 0)
        rows.append((s, tp / n_pos, 1 - fp / n_neg, 2 * tp / (tp + fp + n_pos)))
    pol = parse_policy(policy)
    if pol.kind == "youden":
        best = max(r[1] + r[2] - 1 for r in rows)
        return [r for r in rows if abs(r[1] + r[2] - 1 - best) < 1e-12][-1]
    if pol.kind == "f1":
        best = max(r[3] for r in rows)
        return [r for r in rows if abs(r[3] - best) < 1e-12][-1]
    if pol.kind == "sens":
        return [r for r in rows if r[1] >= pol.target][-1]
    return [r for r in rows if r[2] >= pol.target][0]


@pytest.mark.parametrize("policy", ["youden", "f1", "sens:0.90", "sens:0.80", "spec:0.90", "spec:0.70"])
def test_policies_match_a_brute_force_search(policy):
    rng = np.random.default_rng(5)
    y = (rng.random((300, C)) < 0.25).astype(float)
    p = np.round(metrics.sigmoid(1.2 * (2 * y - 1) + rng.normal(size=y.shape)), 2)
    m = (rng.random(y.shape) < 0.85).astype(float)
    fit = fit_thresholds(p, y, m, policy)
    assert fit.labels == CHEXPERT_LABELS
    for c, name in enumerate(CHEXPERT_LABELS):
        k = m[:, c] == 1
        score, sens, spec, _ = _brute_force(p[k, c], y[k, c], policy)
        row = fit.per_label[name]
        lower = p[k, c][p[k, c] < score]
        expected = (lower.max() + score) / 2 if lower.size else score
        assert row["threshold"] == pytest.approx(expected, abs=1e-12)
        assert row["sensitivity"] == pytest.approx(sens, abs=1e-12)
        assert row["specificity"] == pytest.approx(spec, abs=1e-12)


def test_sensitivity_and_specificity_floors_hold_on_the_tuning_data():
    rng = np.random.default_rng(6)
    y = (rng.random((400, C)) < 0.2).astype(float)
    p = metrics.sigmoid(1.0 * (2 * y - 1) + rng.normal(size=y.shape))
    for policy, key in (("sens:0.90", "sensitivity"), ("spec:0.90", "specificity"), ("sens:0.95", "sensitivity")):
        fit = fit_thresholds(p, y, None, policy)
        target = parse_policy(policy).target
        for row in fit.per_label.values():
            assert row[key] >= target
        # evaluate() at these thresholds on the same rows reports the same rates.
        out = metrics.evaluate(y, p, n_boot=0, threshold=fit.thresholds)
        for name, row in fit.per_label.items():
            assert out["per_label"][name][key] == row[key]


def test_one_class_labels_fall_back_to_half_with_the_reason():
    p = np.tile(HAND_P[:, None], (1, 4))
    y = np.tile(HAND_Y[:, None], (1, 4))
    y[:, 1] = 0
    y[:, 2] = 1
    m = np.ones_like(y)
    m[:, 3] = 0
    fit = fit_thresholds(p, y, m, "sens:0.90", labels=["ok", "none", "all", "masked"])
    assert fit.thresholds == (2.5 / 16, 0.5, 0.5, 0.5)
    assert fit.per_label["ok"]["source"] == "fitted"
    assert fit.per_label["none"]["source"] == "fallback 0.5: no positives in the tuning split"
    assert fit.per_label["all"]["source"] == "fallback 0.5: no negatives in the tuning split"
    assert fit.per_label["masked"]["source"] == "fallback 0.5: no unmasked rows in the tuning split"
    # At 0.5 the scores 8/16 and 9/16 are called positive: 2 of the 8 rows.
    assert fit.per_label["none"]["sensitivity"] is None and fit.per_label["none"]["specificity"] == 0.75
    assert fit.per_label["all"]["specificity"] is None and fit.per_label["all"]["sensitivity"] == 0.25
    assert fit.per_label["masked"]["n_pos"] == fit.per_label["masked"]["n_neg"] == 0


def test_unreachable_specificity_goes_above_every_score():
    # The top score is shared by a positive and a negative: spec:0.9 is met only by calling nothing positive.
    p = np.array([[0.25], [0.5], [0.75], [0.75]])
    y = np.array([[0.0], [0.0], [1.0], [0.0]])
    row = fit_thresholds(p, y, None, "spec:0.90", labels=["a"]).per_label["a"]
    assert row["threshold"] == 0.875
    assert (row["sensitivity"], row["specificity"]) == (0.0, 1.0)
    assert row["source"].startswith("fitted above every tuning score")


def test_fit_thresholds_checks_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_thresholds(HAND_P[:, None] * 4, HAND_Y[:, None], None, "youden", labels=["a"])
    with pytest.raises(ValueError, match="pass labels"):
        fit_thresholds(HAND_P[:, None], HAND_Y[:, None], None, "youden")
    with pytest.raises(ConfigError):
        fit_thresholds(HAND_P[:, None], HAND_Y[:, None], None, "sens:1.5", labels=["a"])


def test_threshold_fit_round_trips_through_json():
    rng = np.random.default_rng(7)
    y = (rng.random((200, C)) < 0.3).astype(float)
    y[:, 5] = 0
    p = metrics.sigmoid(2 * y - 1 + rng.normal(size=y.shape))
    fit = fit_thresholds(p, y, None, "sens:0.9")
    data = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert data["policy"] == "sens:0.90" and len(data["thresholds"]) == C
    back = ThresholdFit.from_dict(data)
    assert back == fit and back.labels == CHEXPERT_LABELS
    data["per_label"][CHEXPERT_LABELS[0]]["threshold"] = 0.123
    with pytest.raises(ValueError, match="threshold"):
        ThresholdFit.from_dict(data)


def test_module_imports_without_sklearn_or_torch():
    code = (
        "import sys, mxa_edge.decision.operating, mxa_edge.decision.metrics; "
        "bad = [m for m in ('sklearn', 'torch', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert operating.DEFAULT_POLICY == "youden"
