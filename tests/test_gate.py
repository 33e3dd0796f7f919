"""The drift gate's rule (mxa_edge.gate) and the one batched scoring loop (mxa_edge.scoring)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from mxa_edge import gate, scoring
from mxa_edge.errors import ConfigError
from mxa_edge.gate import DEFAULT_GATE, GateSpec, gate_score, verdict
from mxa_edge.metrics import paired_auc_delta, sigmoid

# ---------------------------------------------------------------------- verdict


def _table(deltas: dict, macro):
    return {"per_label": {k: {"delta": d, "delta_ci": None} for k, d in deltas.items()}, "macro_delta": macro}


def test_default_bounds():
    assert DEFAULT_GATE == GateSpec(0.005, 0.02, "point")


def test_a_finding_exactly_at_its_bound_passes_and_just_beyond_fails():
    spec = GateSpec(max_macro_drop=0.5, max_drop=0.02)
    assert verdict(_table({"A": -0.02, "B": 0.01}, 0.0), spec) == gate.GateVerdict(True, [])
    v = verdict(_table({"A": -0.02 - 1e-6, "B": 0.01, "C": -0.03}, 0.0), spec)
    assert not v.passed and v.drifted == ["A", "C"]


def test_the_macro_bound_fails_alone():
    spec = GateSpec(max_macro_drop=0.005, max_drop=0.02)
    assert verdict(_table({"A": -0.01, "B": -0.01}, -0.005), spec).passed
    v = verdict(_table({"A": -0.01, "B": -0.01}, -0.005 - 1e-6), spec)
    assert not v.passed and v.drifted == ["macro"]


def test_not_evaluable_deltas_are_ignored():
    v = verdict(_table({"A": None, "B": -0.001}, None), GateSpec())
    assert v.passed and v.drifted == []
    assert verdict(_table({"A": None}, None), GateSpec(-1.0, -1.0)).passed  # nothing to judge


def test_negative_bounds_demand_an_improvement():
    spec = GateSpec(-0.01, -0.01)
    assert not verdict(_table({"A": 0.0}, 0.0), spec).passed
    assert verdict(_table({"A": 0.01}, 0.01), spec).passed


def test_ci_mode_fails_only_when_the_whole_interval_is_beyond_the_bound():
    table = {
        "per_label": {
            "A": {"delta": -0.05, "delta_ci": [-0.09, -0.01]},  # point past the bound, CI reaches back
            "B": {"delta": -0.05, "delta_ci": [-0.09, -0.03]},  # wholly past
            "C": {"delta": -0.05, "delta_ci": None},  # no interval: the point estimate decides
        },
        "macro_delta": -0.05,
        "macro_delta_ci": [-0.08, -0.001],
    }
    assert verdict(table, GateSpec(0.005, 0.02, "point")).drifted == ["A", "B", "C", "macro"]
    assert verdict(table, GateSpec(0.005, 0.02, "ci")).drifted == ["B", "C"]


def test_exceeds_is_a_strict_drop_past_the_bound():
    assert not gate.exceeds(-0.02, 0.02)
    assert gate.exceeds(math.nextafter(-0.02, -1.0), 0.02)
    assert gate.finding_fails(None, 0.0) is False


# ---------------------------------------------------------------------- GateSpec


@pytest.mark.parametrize(
    "spec",
    [GateSpec(-1.5, 0.02), GateSpec(0.005, float("nan")), GateSpec(0.005, "0.02"), GateSpec(mode="bootstrap")],
)
def test_validate_rejects_bad_specs(spec):
    with pytest.raises(ConfigError):
        spec.validate()


def test_validate_accepts_the_range_and_round_trips():
    for spec in (DEFAULT_GATE, GateSpec(-1, -1.0), GateSpec(1, 1.0, "ci"), GateSpec(np.float32(0.1), 0.2)):
        assert spec.validate() is spec
    spec = GateSpec(0.01, 0.03, "ci")
    assert GateSpec.from_dict(spec.to_dict()) == spec
    assert GateSpec.from_dict({}) == DEFAULT_GATE
    assert GateSpec.from_dict({"max_drop": 0.1, "max_macro_drop": 0.2}) == GateSpec(0.2, 0.1)


def test_export_run_checks_its_bounds_with_the_spec(tmp_path):
    from mxa_edge.export import export_run

    with pytest.raises(ConfigError, match="must be >= -1"):  # before the run folder is even read
        export_run(tmp_path / "no-run", "onnx", max_macro_drop=-2.0, max_drop=0.02)


# ---------------------------------------------------------------------- accuracy-control score


def _scored(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 14)) < 0.3).astype(np.float64)
    mask = (rng.random((n, 14)) < 0.9).astype(np.float64)
    ref = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, y.shape), 0.0, 1.0)
    new = np.clip(ref + rng.normal(0, 0.08, y.shape), 0.0, 1.0)
    return y, mask, ref, new


def test_score_is_one_for_the_reference_model():
    y, mask, ref, _ = _scored()
    assert gate_score(y, mask, ref, DEFAULT_GATE)(ref) == 1.0


def test_score_crosses_zero_exactly_where_the_verdict_flips():
    y, mask, ref, new = _scored()
    table = paired_auc_delta(y, ref, new, mask, n_boot=0)
    worst = min(v["delta"] for v in table["per_label"].values() if v["delta"] is not None)
    macro = table["macro_delta"]
    assert worst < 0 and macro < 0
    # At each bound exactly: passes, score 0; the next float below: fails, score below 0.
    for spec, tighter in (
        (GateSpec(1.0, -worst), GateSpec(1.0, math.nextafter(-worst, -1.0))),
        (GateSpec(-macro, 1.0), GateSpec(math.nextafter(-macro, -1.0), 1.0)),
    ):
        assert verdict(table, spec).passed and gate_score(y, mask, ref, spec)(new) == 0.0
        assert not verdict(table, tighter).passed and gate_score(y, mask, ref, tighter)(new) < 0.0
    # And over a sweep of bounds, pass/fail agree.
    for b in np.linspace(-0.05, 0.1, 61):
        for spec in (GateSpec(b, 1.0), GateSpec(1.0, b), GateSpec(b, 4 * b)):
            assert (gate_score(y, mask, ref, spec)(new) >= 0) == verdict(table, spec).passed, spec


def test_drift_gate_and_openvino_score_share_the_rule():
    from mxa_edge.export.drift import gate as drift_gate

    y, mask, ref, new = _scored(seed=1)
    report = drift_gate(y, mask, ref, new, max_macro_drop=0.005, max_drop=0.02, n_boot=0)
    assert report.passed == verdict(report.table, DEFAULT_GATE).passed
    assert report.drifted == verdict(report.table, DEFAULT_GATE).drifted
    assert report.table["max_drop"] == 0.02 and "gate_mode" not in report.table
    assert (gate_score(y, mask, ref)(new) >= 0) == report.passed


def test_gate_and_scoring_do_not_import_torch():
    code = "import sys, mxa_edge.gate, mxa_edge.scoring; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------- scoring


class _Engine:
    """Engine-like: ``run(batch) -> {name: array}``, row-wise, with a batch log."""

    def __init__(self, roi: bool):
        self.roi, self.batches = roi, []

    def run(self, x):
        self.batches.append(len(x))
        out = {"logits": np.tanh(x.reshape(len(x), -1)[:, :3] * 0.01).astype(np.float32)}
        if self.roi:
            out["roi"] = np.repeat(x.reshape(len(x), -1)[:, None, :4], 2, axis=1)
        return out


@pytest.mark.parametrize("batch", [1, 3, 7, 10, 64])
def test_score_concatenates_batches_like_one_call(batch):
    x = np.random.default_rng(0).uniform(-1024, 1024, (10, 1, 4, 4)).astype(np.float32)
    engine = _Engine(roi=True)
    whole = _Engine(roi=True).run(x)
    seen = []
    out = scoring.score(
        scoring.engine_runner(engine),
        x,
        batch=batch,
        outputs=("logits", "roi"),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert set(out) == {"logits", "roi"}
    np.testing.assert_array_equal(out["logits"], whole["logits"])
    np.testing.assert_array_equal(out["roi"], whole["roi"])
    assert engine.batches == [min(batch, 10 - i) for i in range(0, 10, batch)]
    assert seen[-1] == (10, 10) and len(seen) == len(engine.batches)


def test_score_leaves_out_missing_outputs_and_builds_inputs_from_rows():
    x = np.arange(7 * 16, dtype=np.float32).reshape(7, 1, 4, 4)
    rows = []

    def to_input(sl):
        rows.append((sl.start, sl.stop))
        return x[sl] * 2

    out = scoring.score(_Engine(roi=False).run, x, batch=3, to_input=to_input, outputs=("logits", "roi"))
    assert set(out) == {"logits"} and rows == [(0, 3), (3, 6), (6, 9)]
    np.testing.assert_array_equal(out["logits"], _Engine(roi=False).run(x * 2)["logits"])
    assert scoring.score(_Engine(roi=False).run, x[:0]) == {}
    with pytest.raises(ValueError):
        scoring.score(_Engine(roi=False).run, x, batch=0)


def test_torch_runner_matches_the_model():
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.head = torch.nn.Linear(2, 3)

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))

        def forward_aux(self, x):
            return {"logits": self.forward(x), "roi": x[:, :, :2, :2].flatten(1)}

    torch.manual_seed(0)
    model = Tiny().eval()
    x = np.random.default_rng(1).normal(size=(11, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    aux = scoring.score(scoring.torch_runner(model), x, batch=4, outputs=("logits", "roi"))
    plain = scoring.score(scoring.torch_runner(model, aux=False), x, batch=4, outputs=("logits", "roi"))
    assert set(aux) == {"logits", "roi"} and set(plain) == {"logits"}
    np.testing.assert_allclose(aux["logits"], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(plain["logits"], aux["logits"])
    np.testing.assert_array_equal(aux["roi"], x[:, 0, :2, :2].reshape(11, 4))
    # prepare runs on the device's tensor, before the model, without tracking gradients
    doubled = scoring.score(scoring.torch_runner(model, device="cpu", prepare=lambda t: t / 2, aux=False), x * 2)
    np.testing.assert_allclose(doubled["logits"], ref, rtol=1e-6, atol=1e-6)
    probs = scoring.probabilities(plain["logits"])
    assert probs.dtype == np.float64
    np.testing.assert_array_equal(probs, sigmoid(plain["logits"]))


def test_predict_logits_is_the_direct_loop():
    torch = pytest.importorskip("torch")
    from mxa_edge.training.loop import predict_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = np.random.default_rng(2).integers(0, 256, (9, 8, 8), dtype=np.uint8)
    lo, hi = -1024.0, 1024.0
    expected = []
    with torch.no_grad():  # the loop predict_logits had before it used mxa_edge.scoring
        for i in range(0, len(images), 4):
            x = torch.from_numpy(images[i : i + 4]).float().div_(255.0)
            expected.append(model((x * (hi - lo) + lo)[:, None]).float())
    np.testing.assert_array_equal(predict_logits(model, images, (lo, hi), batch_size=4), torch.cat(expected).numpy())
    assert predict_logits(model, images[:0], (lo, hi)).shape == (0, 0)
