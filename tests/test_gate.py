"""The drift gate's rule (mxa_edge.decision.gate) and the one batched scoring loop (mxa_edge.decision.scoring)."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from mxa_edge.decision import gate, scoring
from mxa_edge.decision.gate import DEFAULT_GATE, GateSpec, gate_score, verdict
from mxa_edge.decision.metrics import paired_auc_delta, sigmoid
from mxa_edge.support.errors import ConfigError

# ---------------------------------------------------------------------- verdict

# AUC bounds only: the decision checks (sensitivity, specificity, agreement, ECE) switched off.
LOOSE = dict(max_sens_drop=1.0, max_spec_drop=1.0, min_agreement=0.0, max_ece_increase=1.0)


def _auc(max_macro_drop, max_drop, mode="point") -> GateSpec:
    return GateSpec(max_macro_drop, max_drop, mode, **LOOSE)


def _table(deltas: dict, macro):
    return {"per_label": {k: {"delta": d, "delta_ci": None} for k, d in deltas.items()}, "macro_delta": macro}


def test_default_bounds():
    assert DEFAULT_GATE == GateSpec(0.005, 0.02, "point", 0.03, 0.03, 0.90, 0.02, False)


def test_a_finding_exactly_at_its_bound_passes_and_just_beyond_fails():
    spec = GateSpec(max_macro_drop=0.5, max_drop=0.02)
    assert verdict(_table({"A": -0.02, "B": 0.01}, 0.0), spec) == gate.GateVerdict(True, [])
    v = verdict(_table({"A": -0.02 - 1e-6, "B": 0.01, "C": -0.03}, 0.0), spec)
    assert not v.passed and v.drifted == ["A", "C"]
    assert v.reasons()[0].startswith("A AUC -0.0200")


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


def _decision_row(sens, spec, agree, n_pos=100, n_neg=100, **ci):
    return {
        "delta": 0.0,
        "delta_ci": None,
        "sensitivity_delta": sens,
        "specificity_delta": spec,
        "agreement_at_threshold": agree,
        "n_pos": n_pos,
        "n_neg": n_neg,
        **ci,
    }


def test_sensitivity_specificity_agreement_and_ece_are_gated():
    ok = {"per_label": {"A": _decision_row(-0.03, -0.03, 0.90)}, "macro_delta": 0.0, "ece_delta": 0.02}
    assert verdict(ok, DEFAULT_GATE).passed  # every value exactly at its bound
    for row, ece, failing in (
        (_decision_row(-0.031, 0.0, 1.0), 0.0, ("A", "sensitivity")),
        (_decision_row(0.0, -0.031, 1.0), 0.0, ("A", "specificity")),
        (_decision_row(0.0, 0.0, 0.899), 0.0, ("A", "agreement")),
        (_decision_row(0.0, 0.0, 1.0), 0.0201, ("all findings", "ECE")),
    ):
        v = verdict({"per_label": {"A": row}, "macro_delta": 0.0, "ece_delta": ece}, DEFAULT_GATE)
        assert not v.passed and [(c.scope, c.metric) for c in v.failures] == [failing]


def test_one_image_never_decides_a_sensitivity_or_specificity_check():
    # 20 positives: one flip moves sensitivity by 0.05 (> 0.03) and passes; two flips fail.
    one = {"per_label": {"A": _decision_row(-1 / 20, -1 / 40, 1.0, n_pos=20, n_neg=40)}, "macro_delta": 0.0}
    assert verdict(one, DEFAULT_GATE).passed
    two = {"per_label": {"A": _decision_row(-2 / 20, 0.0, 1.0, n_pos=20, n_neg=40)}, "macro_delta": 0.0}
    v = verdict(two, DEFAULT_GATE)
    assert not v.passed and v.failures[0].bound == pytest.approx(0.05)
    assert gate.resolution_bound(0.03, 1000) == pytest.approx(0.03, abs=1e-8)
    assert gate.resolution_bound(0.03, None) == 0.03
    # One image as the metrics compute it, a difference of two fractions that rounds past -1/20.
    rounded = 12 / 20 - 13 / 20
    assert rounded < -1 / 20
    one = {"per_label": {"A": _decision_row(rounded, 0.0, 1.0, n_pos=20, n_neg=40)}, "macro_delta": 0.0}
    assert verdict(one, DEFAULT_GATE).passed
    # Exactly at the bound passes: 3 of 100 positives (0.03) as the metrics compute it (a real
    # export's Edema row), while a fourth image fails.
    three = 0.84 - 0.87
    assert three < -0.03
    at_bound = {"per_label": {"A": _decision_row(three, 0.0, 1.0, n_pos=100, n_neg=358)}, "macro_delta": 0.0}
    assert verdict(at_bound, DEFAULT_GATE).passed
    four = {"per_label": {"A": _decision_row(0.83 - 0.87, 0.0, 1.0, n_pos=100, n_neg=358)}, "macro_delta": 0.0}
    assert not verdict(four, DEFAULT_GATE).passed


def test_ci_mode_for_decisions_uses_the_interval_end_that_favours_the_model():
    row = _decision_row(
        -0.10, 0.0, 0.80, sensitivity_delta_ci=[-0.2, -0.01], agreement_ci=[0.7, 0.95], specificity_delta_ci=None
    )
    table = {"per_label": {"A": row}, "macro_delta": 0.0, "ece_delta": 0.05, "ece_delta_ci": [0.01, 0.09]}
    assert not verdict(table, DEFAULT_GATE).passed
    assert verdict(table, GateSpec(mode="ci")).passed


def test_subgroups_are_gated_only_when_asked():
    bad = {"per_label": {"A": {"delta": -0.5, "delta_ci": None}}, "macro_delta": -0.5}
    table = {
        **_table({"A": 0.0}, 0.0),
        "subgroups": {
            "Sex: Female": {"status": None, "table": bad},
            "Age: <40": {"status": "too small: 5 images (< 30)", "table": None},
        },
    }
    assert verdict(table, DEFAULT_GATE).passed
    v = verdict(table, GateSpec(subgroups=True))
    assert not v.passed and v.drifted == ["Sex: Female / A", "Sex: Female / macro"]


def _logits(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 14)) < 0.3).astype(np.float64)
    z = rng.normal(0, 1, y.shape) + 2.0 * y - 0.5
    return y, z


def test_a_constant_shift_keeps_auc_and_fails_on_decisions():
    """The case gate v1 missed: INT8 logits of one finding shifted by a constant rank the
    images exactly as before (AUC unchanged) while the decisions near the threshold flip."""
    from mxa_edge.decision.drift import gate as drift_gate

    y, z = _logits()
    shifted = z.copy()
    shifted[:, 3] += 0.6
    report = drift_gate(y, np.ones_like(y), sigmoid(z), sigmoid(shifted), thresholds=0.5, n_boot=200)
    row = report.table["per_label"]["Lung Opacity"]
    assert row["delta"] == 0.0  # the ranking is untouched
    assert row["sensitivity_delta"] > 0.03 and row["specificity_delta"] < -0.03
    assert not report.passed and report.drifted == ["Lung Opacity"]
    assert {c.metric for c in verdict(report.table, DEFAULT_GATE).failures} >= {"specificity"}
    assert verdict(report.table, _auc(0.005, 0.02)).passed  # gate v1 (AUC only) passes it


def test_a_transformation_that_keeps_every_decision_passes():
    from mxa_edge.decision.drift import gate as drift_gate

    y, z = _logits(seed=1)
    # Monotone, fixes 0 (the 0.5 threshold in logit space): every decision and every rank kept.
    warped = np.sign(z) * np.abs(z) ** 1.3
    report = drift_gate(y, np.ones_like(y), sigmoid(z), sigmoid(warped), thresholds=0.5, n_boot=200)
    assert all(v["delta"] == 0.0 and v["agreement_at_threshold"] == 1.0 for v in report.table["per_label"].values())
    assert report.passed, report.reasons


def test_drift_gate_reports_subgroups_and_judges_them_on_request():
    from mxa_edge.decision.drift import gate as drift_gate

    y, z = _logits(n=400, seed=2)
    new = z.copy()
    rows_a, rows_b = np.arange(0, 200), np.arange(200, 400)
    new[rows_a, 5] += 1.0  # slice A's Edema decisions move (specificity falls), slice B untouched
    subgroups = {"Sex: Female": rows_a, "Sex: Male": rows_b, "Age: <40": np.arange(10)}
    args = (y, np.ones_like(y), sigmoid(z), sigmoid(new))
    # Only specificity is gated, with a bound between the whole set's drop and slice A's.
    spec = GateSpec(1.0, 1.0, max_sens_drop=1.0, max_spec_drop=0.35, min_agreement=0.0, max_ece_increase=1.0)
    reported = drift_gate(*args, thresholds=0.5, n_boot=0, subgroups=subgroups, spec=spec)
    subs = reported.table["subgroups"]
    whole = reported.table["per_label"]["Edema"]["specificity_delta"]
    female = subs["Sex: Female"]["table"]["per_label"]["Edema"]["specificity_delta"]
    assert female < -0.35 < whole
    assert subs["Age: <40"]["status"] and subs["Age: <40"]["table"] is None  # too small to judge
    assert subs["Sex: Male"]["passed"] and not subs["Sex: Female"]["passed"]
    assert reported.passed  # reported, not gated
    gated = drift_gate(*args, thresholds=0.5, n_boot=0, subgroups=subgroups, spec=replace(spec, subgroups=True))
    assert not gated.passed and gated.drifted == ["Sex: Female / Edema"]


@pytest.mark.parametrize(
    "spec",
    [
        GateSpec(-1.5, 0.02),
        GateSpec(0.005, float("nan")),
        GateSpec(0.005, "0.02"),
        GateSpec(mode="bootstrap"),
        GateSpec(min_agreement=1.5),
        GateSpec(max_sens_drop=-2.0),
    ],
)
def test_validate_rejects_bad_specs(spec):
    with pytest.raises(ConfigError):
        spec.validate()


def test_validate_accepts_the_range_and_round_trips():
    for spec in (DEFAULT_GATE, GateSpec(-1, -1.0), GateSpec(1, 1.0, "ci"), GateSpec(np.float32(0.1), 0.2)):
        assert spec.validate() is spec
    spec = GateSpec(0.01, 0.03, "ci", 0.05, 0.04, 0.8, 0.01, True)
    assert GateSpec.from_dict(spec.to_dict()) == spec
    assert GateSpec.from_dict({}) == DEFAULT_GATE
    assert GateSpec.from_dict({"max_drop": 0.1, "max_macro_drop": 0.2}) == GateSpec(0.2, 0.1)


def test_export_run_checks_its_bounds_with_the_spec(tmp_path):
    from mxa_edge.torch_side.export import export_run

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
        (_auc(1.0, -worst), _auc(1.0, math.nextafter(-worst, -1.0))),
        (_auc(-macro, 1.0), _auc(math.nextafter(-macro, -1.0), 1.0)),
    ):
        assert verdict(table, spec).passed and gate_score(y, mask, ref, spec)(new) == 0.0
        assert not verdict(table, tighter).passed and gate_score(y, mask, ref, tighter)(new) < 0.0
    # And over a sweep of every bound, pass/fail agree.
    for b in np.linspace(-0.05, 0.1, 31):
        for spec in (
            _auc(b, 1.0),
            _auc(1.0, b),
            _auc(b, 4 * b),
            GateSpec(1.0, 1.0, max_sens_drop=b, max_spec_drop=1.0, min_agreement=0.0, max_ece_increase=1.0),
            GateSpec(1.0, 1.0, max_sens_drop=1.0, max_spec_drop=b, min_agreement=0.0, max_ece_increase=1.0),
            GateSpec(1.0, 1.0, max_sens_drop=1.0, max_spec_drop=1.0, min_agreement=0.8 + b, max_ece_increase=1.0),
            GateSpec(1.0, 1.0, max_sens_drop=1.0, max_spec_drop=1.0, min_agreement=0.0, max_ece_increase=b),
            GateSpec(b, 2 * b, max_sens_drop=2 * b, max_spec_drop=2 * b, min_agreement=0.9 - b, max_ece_increase=b),
        ):
            assert (gate_score(y, mask, ref, spec)(new) >= 0) == verdict(table, spec).passed, spec


def test_score_uses_the_operating_points():
    y, mask, ref, new = _scored(seed=3)
    thresholds = np.linspace(0.3, 0.7, 14)
    table = paired_auc_delta(y, ref, new, mask, n_boot=0, threshold=thresholds)
    spec = GateSpec(1.0, 1.0, max_sens_drop=0.02, max_spec_drop=0.02, min_agreement=0.0, max_ece_increase=1.0)
    assert (gate_score(y, mask, ref, spec, thresholds=thresholds)(new) >= 0) == verdict(table, spec).passed


def test_drift_gate_and_openvino_score_share_the_rule():
    from mxa_edge.decision.drift import gate as drift_gate

    y, mask, ref, new = _scored(seed=1)
    report = drift_gate(y, mask, ref, new, n_boot=0)
    assert report.passed == verdict(report.table, DEFAULT_GATE).passed
    assert report.drifted == verdict(report.table, DEFAULT_GATE).drifted
    assert report.table["gate"] == DEFAULT_GATE.to_dict() and report.table["split"] == "valid"
    assert (gate_score(y, mask, ref)(new) >= 0) == report.passed


def test_gate_and_scoring_do_not_import_torch():
    code = "import sys, mxa_edge.decision.gate, mxa_edge.decision.scoring; sys.exit(1 if 'torch' in sys.modules else 0)"
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
    from mxa_edge.torch_side.models.execution import torch_runner

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
    aux = scoring.score(torch_runner(model), x, batch=4, outputs=("logits", "roi"))
    plain = scoring.score(torch_runner(model, aux=False), x, batch=4, outputs=("logits", "roi"))
    assert set(aux) == {"logits", "roi"} and set(plain) == {"logits"}
    np.testing.assert_allclose(aux["logits"], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(plain["logits"], aux["logits"])
    np.testing.assert_array_equal(aux["roi"], x[:, 0, :2, :2].reshape(11, 4))
    # prepare runs on the device's tensor, before the model, without tracking gradients
    doubled = scoring.score(torch_runner(model, device="cpu", prepare=lambda t: t / 2, aux=False), x * 2)
    np.testing.assert_allclose(doubled["logits"], ref, rtol=1e-6, atol=1e-6)
    probs = scoring.probabilities(plain["logits"])
    assert probs.dtype == np.float64
    np.testing.assert_array_equal(probs, sigmoid(plain["logits"]))


def test_predict_logits_is_the_direct_loop():
    torch = pytest.importorskip("torch")
    from mxa_edge.torch_side.training.loop import predict_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = np.random.default_rng(2).integers(0, 256, (9, 8, 8), dtype=np.uint8)
    lo, hi = -1024.0, 1024.0
    expected = []
    with torch.no_grad():  # the loop predict_logits had before it used mxa_edge.decision.scoring
        for i in range(0, len(images), 4):
            x = torch.from_numpy(images[i : i + 4]).float().div_(255.0)
            expected.append(model((x * (hi - lo) + lo)[:, None]).float())
    np.testing.assert_array_equal(predict_logits(model, images, (lo, hi), batch_size=4), torch.cat(expected).numpy())
    assert predict_logits(model, images[:0], (lo, hi)).shape == (0, 0)
