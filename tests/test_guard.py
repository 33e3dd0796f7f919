"""The input guard's arithmetic (mxa_edge.decision.guard) and its place in the gate: no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from mxa_edge.decision.gate import DEFAULT_GATE, GateSpec, checks, verdict
from mxa_edge.decision.guard import InputGuard, fit_guard, guard_drift
from mxa_edge.support.errors import ArtifactError


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


# --- the image statistics and the fused guard ---------------------------------------------------


def _phantom_inputs(root, split: str, size: int = 64, limit=None):
    """Phantom radiographs of ``root`` as model inputs (N, 1, S, S) and their value range."""
    from mxa_edge.data.arrays import load_split_arrays
    from mxa_edge.imaging.preprocess import Preprocess

    pp = Preprocess(image_size=size)
    arrays = load_split_arrays(root, split, pp, limit=limit, workers=1)
    return arrays.model_input(slice(None), pp), pp


def test_image_statistics_read_like_the_image():
    from mxa_edge.decision.guard import image_statistics

    lo, hi = -1024.0, 1024.0
    ramp = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))  # dark left, light right
    valley = np.abs(ramp - 0.5) * 2  # light sides, dark middle: mirror-symmetric
    gray = np.stack([ramp, valley, np.full((64, 64), 0.25)])
    stats = image_statistics(lo + gray[:, None] * (hi - lo), (lo, hi))
    assert stats.shape == (3, 6 * 6 + 7 + 4 + 1)
    layout = stats[:, :36].reshape(3, 6, 6)
    assert layout[0, 0, 0] < 0.1 and layout[0, 0, -1] > 0.9  # the ramp, block by block
    np.testing.assert_allclose(stats[2, 36:43], 0.25, atol=1e-6)  # flat: every percentile 0.25
    np.testing.assert_allclose(stats[0, 39], np.median(ramp), atol=1e-6)
    assert stats[1, -1] == pytest.approx(1.0, abs=1e-6)  # mirror-symmetric: correlation 1
    assert stats[0, -1] == pytest.approx(-1.0, abs=1e-6)  # a ramp is its own mirror, negated
    # Inverting an image mirrors its layout about 0.5: what the guard looks for in a MONOCHROME mix-up.
    inv = image_statistics(lo + (1.0 - gray[:, None]) * (hi - lo), (lo, hi))
    np.testing.assert_allclose(inv[:, :36], 1.0 - stats[:, :36], atol=1e-9)
    with pytest.raises(ValueError, match="square"):
        image_statistics(np.zeros((2, 1, 8, 9)), (lo, hi))


def test_fused_guard_flags_inverted_films_and_textures_its_features_cannot_tell_apart(phantom_root):
    """The features here are the same noise for every image, so only the image statistics can
    tell a film from its negative or from a texture: the fused guard must, and still pass new
    films of the same kind."""
    pytest.importorskip("sklearn")
    from mxa_edge.data.ood import document_images, texture_images
    from mxa_edge.decision.guard import image_statistics

    x, pp = _phantom_inputs(phantom_root, "train")
    n = len(x)
    train, tune = x[: n - 60], x[n - 60 :]
    held_out, _ = _phantom_inputs(phantom_root, "valid")
    stats = lambda inputs: image_statistics(inputs, pp.value_range)  # noqa: E731
    guard = fit_guard(
        _gaussian(len(train), 16, 0),
        _gaussian(len(tune), 16, 1),
        train_statistics=stats(train),
        tune_statistics=stats(tune),
        value_range=pp.value_range,
    )
    lo, hi = pp.value_range
    challenge = {
        "inverted": (lo + hi) - held_out,
        "texture": np.stack([pp(g) for g in texture_images(60, 96, seed=3)]),
        "document": np.stack([pp(g) for g in document_images(30, 96, seed=3)]),
    }
    rate = {k: guard.flags(_gaussian(len(v), 16, 5 + i), v).mean() for i, (k, v) in enumerate(challenge.items())}
    assert rate["inverted"] > 0.95 and rate["texture"] > 0.9 and rate["document"] > 0.9, rate
    assert guard.flags(_gaussian(len(held_out), 16, 9), held_out).mean() < 0.06
    # The features alone are blind to all of it (same noise): ~1% flagged whatever the image.
    blind = fit_guard(_gaussian(len(train), 16, 0), _gaussian(len(tune), 16, 1))
    assert blind.flags(_gaussian(len(held_out), 16, 5)).mean() < 0.06
    # Each distance is scaled by its tuning median: a typical tuning image scores about 1.
    assert np.median(guard.score(_gaussian(len(tune), 16, 1), tune)) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="pass the model inputs"):
        guard.score(_gaussian(3, 16, 2))


def test_fused_guard_round_trips_and_says_what_it_is(tmp_path, phantom_root):
    pytest.importorskip("sklearn")
    from mxa_edge.decision.guard import FUSED_METHOD, image_statistics

    x, pp = _phantom_inputs(phantom_root, "train", limit=120)
    stats = image_statistics(x, pp.value_range)
    guard = fit_guard(
        _gaussian(80, 8, 0),
        _gaussian(40, 8, 1),
        train_statistics=stats[:80],
        tune_statistics=stats[80:],
        value_range=pp.value_range,
    )
    guard.save(tmp_path)
    record = guard.record()
    back = InputGuard.load(tmp_path, record)
    feats = _gaussian(5, 8, 2, shift=1.0)
    np.testing.assert_array_equal(back.score(feats, x[:5]), guard.score(feats, x[:5]))
    assert back.fused and back.value_range == pp.value_range
    assert record.method == FUSED_METHOD and record.image_dim == stats.shape[1]
    assert set(record.scales) == {"features", "image"} and record.fitted_on["scales"] == "tune"
    # A guard fitted on other image statistics is refused, never scored with these.
    with np.load(tmp_path / "guard.npz") as z:
        arrays = {k: z[k] for k in z.files}
    with open(tmp_path / "guard.npz", "wb") as f:
        np.savez(f, **{**arrays, "statistics_version": np.asarray(99.0)})
    with pytest.raises(ArtifactError, match="image statistics version 99"):
        InputGuard.load(tmp_path, record)
    # A guard of the features alone (an artifact exported before the image part) says nothing of it.
    plain = fit_guard(_gaussian(80, 8, 0), _gaussian(40, 8, 1)).record().to_dict()
    assert not {"image_statistics", "image_dim", "scales"} & set(plain)


def test_threshold_of_several_datasets_is_the_largest_of_their_percentiles():
    pytest.importorskip("sklearn")
    train = _gaussian(600, 6, 0)
    tight, loose = _gaussian(100, 6, 1), _gaussian(50, 6, 2) * 1.6  # a second, more varied population
    groups = ["a"] * len(tight) + ["b"] * len(loose)
    guard = fit_guard(train, np.concatenate([tight, loose]), tune_groups=groups)
    per = [np.percentile(guard.score(part), 99.0) for part in (tight, loose)]
    assert guard.threshold == pytest.approx(max(per))
    assert guard.threshold > np.percentile(guard.score(np.concatenate([tight, loose])), 99.0)
    assert "the largest of each dataset's (a, b)" in guard.record().threshold_rule
    single = fit_guard(train, tight, tune_groups=["a"] * len(tight))
    assert single.threshold == pytest.approx(np.percentile(single.score(tight), 99.0))
