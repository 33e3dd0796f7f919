"""``mxa-edge monitor``: drift alarms from synthetic audit logs (torch-free, seconds).

The logs are what ``mxa-edge serve`` writes: JSON lines, one ``predicted`` event per image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from mxa_edge.runtime import monitor as mon

CLI = [sys.executable, "-m", "mxa_edge_cli.app", "monitor"]
START = date(2026, 3, 1)
FINDINGS = {"Edema": 0.20, "Pleural Effusion": 0.30}


def write_log(path, *, days: int, per_day: int, flag_rate, finding_rates=None, seed: int = 0):
    """An audit log: ``flag_rate(day)`` / ``finding_rates(day)[label]`` give each day's rates
    (day 1 = START); one study of one image per case, a ``sent`` event after each prediction."""
    rng = np.random.default_rng(seed)
    finding_rates = finding_rates or (lambda day: FINDINGS)
    with open(path, "w", encoding="utf-8") as f:
        for day in range(1, days + 1):
            t0 = datetime.combine(START + timedelta(days=day - 1), datetime.min.time(), tzinfo=timezone.utc)
            for i in range(per_day):
                t = t0 + timedelta(minutes=20 * i)
                study, sop = f"1.2.3.{day}.{i}", f"1.2.3.{day}.{i}.1"
                rates = finding_rates(day)
                positives = [lab for lab, p in rates.items() if rng.random() < p]
                base = {"calling_ae": "MODALITY", "study_uid": study, "sop_uid": sop}
                stamp = t.isoformat().replace("+00:00", "Z")
                events = [
                    {"time": stamp, "event": "received", **base},
                    {
                        "time": stamp,
                        "event": "predicted",
                        **base,
                        "model_id": "m",
                        "in_distribution": bool(rng.random() >= flag_rate(day)),
                        "ood_score": 1.0,
                        "positives": positives,
                        "probabilities": {lab: 0.5 for lab in rates},
                        "thresholds": {lab: 0.5 for lab in rates},
                    },
                    {"time": stamp, "event": "sent", **base, "latency_s": float(rng.uniform(0.2, 1.0))},
                ]
                f.writelines(json.dumps(e) + "\n" for e in events)
    return path


def run_cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)


def test_exact_tails_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for x, n, p in [(6, 40, 0.02), (0, 40, 0.02), (40, 40, 0.3), (3, 10, 0.5), (17, 200, 0.05)]:
        assert mon.binom_sf(x, n, p) == pytest.approx(stats.binom.sf(x - 1, n, p), rel=1e-9, abs=1e-300)
        assert mon.binom_cdf(x, n, p) == pytest.approx(stats.binom.cdf(x, n, p), rel=1e-9)
    lo, hi = mon.fisher_tails(6, 40, 24, 1200)
    table = [[6, 34], [24, 1176]]
    assert hi == pytest.approx(stats.fisher_exact(table, alternative="greater").pvalue, rel=1e-9)
    assert lo == pytest.approx(stats.fisher_exact(table, alternative="less").pvalue, rel=1e-9)


def test_stable_log_no_alarm_and_jump_on_day_20(tmp_path):
    stable = write_log(tmp_path / "stable.jsonl", days=30, per_day=40, flag_rate=lambda d: 0.02)
    out = run_cli(stable, "--baseline-days", 10, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    rep = json.loads(out.stdout)
    assert rep["alarms"] == [] and len(rep["days"]) == 30 and rep["tested_from"] == "2026-03-11"
    assert rep["days"][0]["images"] == 40 and rep["days"][0]["studies"] == 40
    assert rep["days"][0]["latency_p50"] is not None and rep["cusum"]["h"] > 0

    jump = write_log(tmp_path / "jump.jsonl", days=30, per_day=40, flag_rate=lambda d: 0.15 if d >= 20 else 0.02)
    out = run_cli(jump, "--baseline-days", 10)
    assert out.returncode == mon.ALARM_EXIT, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("ALARM")]
    day20 = (START + timedelta(days=19)).isoformat()
    assert any(day20 in line and "(day 20)" in line and "flag rate:" in line and "p = " in line for line in lines)
    assert not any(line.split()[1] < day20 for line in lines), lines  # nothing before the jump


def test_finding_whose_rate_doubles_alarms(tmp_path):
    def rates(day):
        return {**FINDINGS, "Edema": 0.40} if day >= 20 else FINDINGS

    log = write_log(tmp_path / "edema.jsonl", days=30, per_day=40, flag_rate=lambda d: 0.02, finding_rates=rates)
    out = run_cli(log, "--baseline-days", 10, "--json")
    assert out.returncode == mon.ALARM_EXIT
    alarms = json.loads(out.stdout)["alarms"]
    edema = [a for a in alarms if a["metric"] == "Edema positive rate"]
    assert edema and all(a["day"] >= 20 for a in alarms), alarms
    assert all(a["p_value"] < a["level"] for a in edema)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_false_alarms_within_alpha(tmp_path, alpha):
    """200 stable days after a 30-day baseline (40 images/day, flags 2%, two findings): days
    with any alarm stay within Binomial(200, alpha)'s 99.9th percentile (8 at alpha 0.01, 21 at
    0.05). Measured with seed 1: 1 day at alpha 0.01 (2 expected at most), 6 at 0.05 (10)."""
    log = write_log(tmp_path / "long.jsonl", days=230, per_day=40, flag_rate=lambda d: 0.02, seed=1)
    rep = mon.monitor([log], baseline_days=30, alpha=alpha)
    assert len(rep.tests_per_day) == 200
    alarm_days = {a.date for a in rep.alarms}
    bound = mon.binom_quantile(0.999, 200, alpha)
    print(f"alpha {alpha}: {len(alarm_days)} of 200 stable days alarmed (bound {bound})")
    assert len(alarm_days) <= bound


def test_plot_and_its_overwrite_rule(tmp_path):
    pytest.importorskip("matplotlib")
    log = write_log(tmp_path / "a.jsonl", days=12, per_day=20, flag_rate=lambda d: 0.02)
    png = tmp_path / "monitor.png"
    assert run_cli(log, "--baseline-days", 5, "--plot", png, "-q").returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(log, "--baseline-days", 5, "--plot", png, "-q").returncode == 0  # its own plot: replaced
    out = run_cli(log, "--baseline-days", 5, "--plot", log)  # never over an input
    assert out.returncode == 2 and "not a monitor plot" in out.stderr


def test_user_errors(tmp_path):
    log = write_log(tmp_path / "a.jsonl", days=3, per_day=5, flag_rate=lambda d: 0.0)
    out = run_cli(log)
    assert out.returncode == 2 and "--baseline-days" in out.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time": "2026-03-01T00:00:00Z", "event": "predicted"}\nnot json\n')
    out = run_cli(bad, "--baseline-days", 1)
    assert out.returncode == 4 and "bad.jsonl:2" in out.stderr


@pytest.fixture(scope="module")
def artifact(small_onnx_artifact):
    """A real small artifact (phantom run, FP32 ONNX export): its guard and decision rule are
    what --model reads. Needs the [train] extra to build; monitor itself stays torch-free."""
    return small_onnx_artifact[1]


@pytest.mark.slow
def test_model_gives_the_expected_rates(tmp_path, artifact):
    from mxa_edge.formats import load_artifact

    art = load_artifact(artifact, trust=())
    guard, decision = art.manifest.guard, art.manifest.decision
    flag, findings, notes = mon.expected_from_artifact(guard, decision)
    assert flag.rate == pytest.approx(1 - guard.percentile / 100) and flag.n0 is None
    for label, exp in findings.items():  # sens * n_pos + (1 - spec) * n_neg of n_pos + n_neg
        t = decision.tuning[label]
        assert exp.n0 == t["n_pos"] + t["n_neg"] and exp.rate == pytest.approx(
            (round(t["sensitivity"] * t["n_pos"]) + round((1 - t["specificity"]) * t["n_neg"])) / exp.n0
        )
    assert findings or notes

    rates = {label: e.rate for label, e in findings.items()}
    stable = write_log(
        tmp_path / "s.jsonl", days=20, per_day=40, flag_rate=lambda d: flag.rate, finding_rates=lambda d: rates
    )
    out = run_cli(stable, "--model", artifact, "--json")
    rep = json.loads(out.stdout)
    assert out.returncode == 0, rep["alarms"]
    assert rep["expected"]["flag_rate"]["rate"] == pytest.approx(flag.rate) and rep["tested_from"] == "2026-03-01"

    jump = write_log(
        tmp_path / "j.jsonl",
        days=20,
        per_day=40,
        flag_rate=lambda d: 0.15 if d >= 10 else flag.rate,
        finding_rates=lambda d: rates,
    )
    out = run_cli(jump, "--model", artifact)
    assert out.returncode == mon.ALARM_EXIT
    assert any("(day 10) flag rate:" in line for line in out.stderr.splitlines())
