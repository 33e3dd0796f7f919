"""The input guard's arithmetic (mxa_edge.decision.guard) and its place in the gate: no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from mxa_edge.decision.gate import DEFAULT_GATE, GateSpec, checks, verdict
from mxa_edge.decision.guard import InputGuard, fit_guard, guard_drift


def _gaussian(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # correlated features
    return rng.normal(size=(n, d)) @ mix + shift


def test_score_is_the_mahalanobis_distance_under_ledoit_wolf():
    pytest.importorskip("sklearn")
    from sklearn.covariance import LedoitWolf

    train, tune = _gaussian(500, 12, 0), _gaussian(200, 12, 1)
    guard = fit_guard(train, tune, percentile=99.0)
    lw = LedoitWolf().fit(train)
    x = _gaussian(7, 12, 2, shift=0.5)
    want = np.sqrt(np.einsum("ij,jk,ik->i", x - lw.location_, lw.precision_, x - lw.location_))
    np.testing.assert_allclose(guard.score(x), want, rtol=1e-9)
    # The threshold is the tuning split's 99th percentile: ~1% of tuning rows above it.
    assert guard.threshold == pytest.approx(np.percentile(guard.score(tune), 99.0))
    assert guard.flags(tune).mean() == pytest.approx(0.01, abs=0.006)


def test_guard_flags_shifted_inputs_and_passes_new_in_distribution_ones():
    pytest.importorskip("sklearn")
    guard = fit_guard(_gaussian(800, 20, 0), _gaussian(300, 20, 1))
    fresh = guard.flags(_gaussian(2000, 20, 3)).mean()
    assert fresh < 0.03  # in distribution: about 1%
    assert guard.flags(_gaussian(200, 20, 4, shift=1.5)).mean() > 0.95


def test_guard_round_trips_through_its_file(tmp_path):
    pytest.importorskip("sklearn")
    guard = fit_guard(_gaussian(300, 8, 0), _gaussian(100, 8, 1))
    name = guard.save(tmp_path)
    back = InputGuard.load(tmp_path, guard.record())
    x = _gaussian(5, 8, 2, shift=1.0)
    np.testing.assert_array_equal(back.score(x), guard.score(x))
    assert back.threshold == guard.threshold and (tmp_path / name).is_file()
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        guard.score(np.zeros((2, 9)))


def test_fit_guard_refuses_what_cannot_fit():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="at least 2"):
        fit_guard(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="percentile"):
        fit_guard(_gaussian(50, 4, 0), _gaussian(10, 4, 1), percentile=100.0)


def _table_with_guard(ref_scores, new_scores, threshold):
    per = {"Edema": {"delta": 0.0, "delta_ci": None}}
    return {
        "per_label": per,
        "macro_delta": 0.0,
        "macro_delta_ci": None,
        "guard": guard_drift(ref_scores, new_scores, threshold, n_boot=200, seed=0),
    }


def test_gate_bounds_the_guards_flag_rate_rise_never_finer_than_one_image():
    ref = np.linspace(0.0, 1.0, 100)  # 1 of 100 above 0.985
    threshold = 0.985
    same = _table_with_guard(ref, ref, threshold)
    assert same["guard"]["flag_rate_delta"] == 0.0 and same["guard"]["agreement"] == 1.0
    assert verdict(same).passed

    two_more = ref.copy()
    two_more[[10, 20]] = 2.0  # 2 more of 100 flagged: +0.02, exactly at the default bound
    assert verdict(_table_with_guard(ref, two_more, threshold)).passed
    five_more = ref.copy()
    five_more[[10, 20, 30, 40, 50]] = 2.0  # +0.05
    v = verdict(_table_with_guard(ref, five_more, threshold))
    assert not v.passed and v.drifted == ["input guard"]
    assert "flag rate +0.0500" in v.reasons()[0]

    # 30 images: one image is 1/30 > 0.02, so one extra flag never fails on its own.
    small_ref = np.zeros(30)
    one_more = small_ref.copy()
    one_more[0] = 2.0
    assert verdict(_table_with_guard(small_ref, one_more, 1.0)).passed
    c = [c for c in checks(_table_with_guard(small_ref, one_more, 1.0)) if c.metric == "flag rate"][0]
    assert c.bound == pytest.approx(1 / 30, abs=1e-8)
    # A stricter bound is the user's to set, and a negative one is refused like the others.
    strict = GateSpec(max_guard_flag_increase=0.0)
    assert not verdict(_table_with_guard(ref, two_more, threshold), strict).passed
    with pytest.raises(Exception, match="max_guard_flag_increase"):
        GateSpec(max_guard_flag_increase=-2).validate()
    assert DEFAULT_GATE.to_dict()["max_guard_flag_increase"] == 0.02
