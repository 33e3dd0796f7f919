"""mxa-edge bench: rows, statuses, speedups, machine record, compute bound, CLI outputs.

One tiny real run (M0, 64 px, 1 epoch, no teacher) from the conftest helpers, its four
standard exports made by run_bench itself (export_missing, loose bounds: a 100-image
validation set of a one-epoch model is not what the gate's defaults are for) plus one
export rejected by an impossible bound. Real ONNX Runtime and OpenVINO; no timing
assertions (the machine is shared), only structure and consistency.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import tiny_config  # noqa: E402

from mxa_edge.bench import FAILED, PASS, REJECTED, UNAVAILABLE, run_bench  # noqa: E402
from mxa_edge.decision.gate import GateSpec  # noqa: E402
from mxa_edge.support.errors import DriftGateError  # noqa: E402

# Nothing can fail this gate: the bench tests measure, they do not judge drift.
ANY_DRIFT = GateSpec(
    1.0, 1.0, max_sens_drop=1.0, max_spec_drop=1.0, min_agreement=0.0, max_ece_increase=1.0, max_guard_flag_increase=1.0
)
LOOSE = {"gate": ANY_DRIFT, "n_boot": 20, "calib_size": 32}
QUICK = {"seconds": 0.2, "warmup": 0.05, "rounds": 2}


@pytest.fixture(scope="module")
def bench_run(phantom_root, tmp_path_factory) -> Path:
    from mxa_edge.torch_side.export import export_run
    from mxa_edge.torch_side.training.pipeline import train

    out = tmp_path_factory.mktemp("bench") / "run"
    train(tiny_config(phantom_root, out, epochs=1, kd=False, teacher="none"))
    with pytest.raises(DriftGateError):  # an AUC gain of 1 is impossible: kept as onnx-strict.rejected
        export_run(out, "onnx", out / "exports" / "onnx-strict", max_macro_drop=-1.0, max_drop=-1.0, n_boot=0)
    return out


@pytest.fixture(scope="module")
def result(bench_run) -> dict:
    return run_bench(
        [bench_run], batches=(1, 4), threads=1, export_missing=True, export_kwargs=LOOSE, peak_quick=True, **QUICK
    )


def _row(result, backend, precision_prefix):
    """The one row of a backend and precision, leaving out the rejected export."""
    rows = [
        r
        for r in result["rows"]
        if r["backend"] == backend and r["precision"].startswith(precision_prefix) and r["status"] != REJECTED
    ]
    assert len(rows) == 1, [(r["backend"], r["precision"]) for r in result["rows"]]
    return rows[0]


def test_rows_cover_every_backend_with_statuses(result, bench_run):
    for name in ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
        assert (bench_run / "exports" / name / "manifest.json").is_file()  # created by export_missing
    measured = [
        _row(result, "PyTorch eager", "FP32"),
        _row(result, "ONNX Runtime", "FP32"),
        _row(result, "ONNX Runtime", "INT8"),
        _row(result, "OpenVINO", "FP32"),
        _row(result, "OpenVINO", "INT8"),
    ]
    default = [r for r in result["rows"] if r["backend"] == "OpenVINO" and r["precision"].endswith("(CPU default)")]
    assert len(default) == 1 and any("INFERENCE_PRECISION_HINT" in n for n in default[0]["notes"])
    for r in measured + default:
        assert r["status"] == PASS, r
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_img_s"] > 0 and r["by_batch"]["4"]["img_s"] > 0
        assert r["size_mb"] > 0 and r["params"] > 0
    for backend, precision in (("TensorRT", "FP16"), ("TensorRT", "INT8"), ("PyTorch CUDA", "bf16")):
        r = _row(result, backend, precision)
        if not torch.cuda.is_available():
            assert r["status"] == UNAVAILABLE and r["reason"] and r["p50_ms"] is None
    rejected = [r for r in result["rows"] if r["path"] and r["path"].endswith("onnx-strict.rejected")]
    assert len(rejected) == 1 and rejected[0]["status"] == REJECTED
    assert not any(r["status"] == FAILED for r in result["rows"])


def test_speedup_gflops_and_auc_come_from_the_right_sources(result, bench_run):
    torch_row = _row(result, "PyTorch eager", "FP32")
    assert torch_row["speedup"] == pytest.approx(1.0) and torch_row["speedup_throughput"] == pytest.approx(1.0)
    metrics = json.loads((bench_run / "metrics.json").read_text())
    assert torch_row["macro_auc"] == pytest.approx(metrics["macro_auc"])
    for r in result["rows"]:
        if r["status"] == PASS:
            assert r["speedup"] > 0 and r["speedup_throughput"] > 0
    for name, (backend, prec) in {
        "onnx-fp32": ("ONNX Runtime", "FP32"),
        "onnx-int8": ("ONNX Runtime", "INT8"),
        "openvino-int8": ("OpenVINO", "INT8"),
    }.items():
        manifest = json.loads((bench_run / "exports" / name / "manifest.json").read_text())
        r = _row(result, backend, prec)
        assert r["gflops"] == pytest.approx(manifest["flops"] / 1e9)
        assert r["params"] == manifest["params"]
        assert r["macro_auc"] == pytest.approx(manifest["drift"]["macro_auc_new"])
        assert r["worst_delta"] == pytest.approx(manifest["drift"]["worst_delta"])
    # The PyTorch row counts the same FP32 model the manifests were counted on.
    assert torch_row["gflops"] == pytest.approx(_row(result, "ONNX Runtime", "FP32")["gflops"])


def test_fastest_gated_export_is_the_minimum_over_passing_exports(result, bench_run):
    """The recommendation never names PyTorch, a rejected export or an ungated precision."""
    fast = result["fastest"][str(bench_run)]
    eligible = [
        r
        for r in result["rows"]
        if r["status"] == PASS
        and r.get("path")
        and r["p50_ms"] is not None
        and "CPU default" not in r["precision"]
        and r["backend"] != "PyTorch eager"
    ]
    assert eligible
    assert fast["latency"]["p50_ms"] == min(r["p50_ms"] for r in eligible)
    assert fast["throughput"]["throughput_img_s"] == max(r["throughput_img_s"] for r in eligible)
    named = {fast["latency"]["row"], fast["throughput"]["row"]}
    assert not any(n.startswith("PyTorch") or "CPU default" in n for n in named)
    # INT8 against float: a speedup, and where it is below 1 a one-line reason naming the ISA.
    verdict = fast["int8_vs_float"]
    assert "INT8" in verdict["int8"] and "INT8" not in verdict["float"] and verdict["speedup"] > 0
    assert (verdict["note"] is None) == (verdict["speedup"] >= 1.0)
    if verdict["note"]:
        assert "\n" not in verdict["note"] and "on this CPU (" in verdict["note"]


def test_machine_record_and_compute_bound(result):
    m = result["machine"]
    for key in ("cpu_model", "logical_cores", "physical_cores", "flags", "ram_gb", "os", "python", "versions", "gpu"):
        assert key in m
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"):
        assert isinstance(m["flags"][flag], bool)
    for lib in ("numpy", "torch", "onnxruntime", "openvino", "nncf"):
        assert lib in m["versions"]
    assert result["settings"]["threads"] == 1
    cb = result["compute_bound"]
    for prec in ("fp32", "bf16", "int8"):
        assert cb["measured"][prec]["gflops"] > 0 and cb["measured"][prec]["method"]
    assert cb["theoretical"]["available"] is False or cb["theoretical"]["assumption"]
    for r in result["rows"]:
        if r["status"] == PASS and r["achieved_gflops"] is not None:
            assert 0 < r["fraction_of_peak"] <= 1, r
    best = cb["best_int8"]
    assert best is not None and 0 < best["ratio_to_measured_peak"] <= 1 and best["bound_img_s"] > 0
    # only an export the gate passed can be named the best INT8
    gated_int8 = {
        f"{r['backend']} {r['precision']}" for r in result["rows"] if r["status"] == PASS and r["compute"] == "int8"
    }
    assert best["row"] in gated_int8


def test_cli_writes_json_and_png_for_an_artifact(result, bench_run, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from mxa_edge_cli.app import app

    art = bench_run / "exports" / "onnx-fp32"
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = [
        "bench",
        str(art),
        "--json",
        str(out),
        "--plot",
        str(png),
        "--seconds",
        "0.2",
        "--warmup",
        "0.05",
        "--rounds",
        "2",
        "--threads",
        "1",
    ]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})  # wide enough that rich does not fold cells
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert {"settings", "machine", "compute_bound", "rows"} <= set(data)
    assert [(r["backend"], r["status"]) for r in data["rows"]] == [("ONNX Runtime", PASS)]
    assert data["rows"][0]["speedup"] is None  # no PyTorch row in this benchmark to compare with
    with Image.open(png) as im:
        im.verify()
    assert "ORT" in res.output and "pass" in res.output  # the rich table (ORT = ONNX Runtime)
    # The goal ratios: under the table and in the JSON (no PyTorch row here: no INT8 speedup).
    assert "goals (" in res.output and "best gated INT8 vs PyTorch eager FP32" in res.output
    assert set(next(iter(data["goals"].values()))) >= {"isa", "int8_vs_pytorch", "int8_vs_float", "mxa_overhead"}


def test_cli_reports_a_rejected_artifact(bench_run, tmp_path):
    from typer.testing import CliRunner

    from mxa_edge_cli.app import app

    out = tmp_path / "rejected.json"
    res = CliRunner().invoke(
        app,
        [
            "bench",
            str(bench_run / "exports" / "onnx-strict.rejected"),
            "--json",
            str(out),
            "--seconds",
            "0.1",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--threads",
            "1",
            "-q",
            "--allow-rejected",  # timed for investigation only; without it the row is listed, not timed
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["status"] == REJECTED and "drift gate failed" in row["reason"] and row["p50_ms"] > 0
    assert data["settings"]["allow_rejected"] is True and "--allow-rejected" in row["reason"]


def test_runtime_rows_work_without_torch(bench_run, tmp_path):
    """ORT and OpenVINO rows on the light install: torch imports are blocked in a child."""
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from mxa_edge.bench import run_bench\n"
        f"r = run_bench([{str(bench_run / 'exports' / 'onnx-int8')!r}, "
        f"{str(bench_run / 'exports' / 'openvino-fp32')!r}],"
        " threads=1, seconds=0.1, warmup=0, rounds=1)\n"
        "print(json.dumps([[x['backend'], x['precision'], x['status'], x['p50_ms'], "
        "x['fraction_of_peak']] for x in r['rows']]"
        " + [r['compute_bound']['measured']['fp32']['method']]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *rows, method = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "numpy" in method
    assert len(rows) == 3  # ORT INT8, OpenVINO f32 hint, OpenVINO CPU default
    for _backend, _precision, status, p50, frac in rows:
        assert status == PASS and p50 > 0 and frac is not None and not math.isnan(frac)


def test_bad_arguments_are_user_errors(tmp_path):
    from mxa_edge.support.errors import ArtifactError, ConfigError

    with pytest.raises(ArtifactError):
        run_bench([tmp_path], **QUICK)
    with pytest.raises(ConfigError):
        run_bench([tmp_path], batches=(0,), **QUICK)


def test_cli_on_a_run_writes_json_and_plot_beside_it(result, bench_run):
    """`mxa-edge bench RUN` with no --json/--plot: RUN/bench.json and RUN/bench.png."""
    from PIL import Image
    from typer.testing import CliRunner

    from mxa_edge_cli.app import app

    args = [
        "bench",
        str(bench_run),
        "--no-export-missing",
        "--seconds",
        "0.2",
        "--warmup",
        "0.05",
        "--rounds",
        "2",
        "--threads",
        "1",
        "--batch",
        "1,2",
        "--quiet",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads((bench_run / "bench.json").read_text())
    backends = {r["backend"] for r in data["rows"]}
    assert {"PyTorch eager", "ONNX Runtime", "OpenVINO", "TensorRT"} <= backends
    with Image.open(bench_run / "bench.png") as im:
        assert im.format == "PNG"


def test_goals_are_the_ratios_of_the_rows_they_name(result, bench_run):
    """Each goal's value is computed from the rows it names: the fastest gated INT8 row's
    paired speedup and share of the INT8 bound, float p50 / INT8 p50; met follows target."""
    from mxa_edge.bench.goals import INT8_SHARE_OF_BOUND, INT8_VS_PYTORCH
    from mxa_edge.support.machine import isa_line

    goals = result["goals"][str(bench_run)]
    assert goals["isa"] == isa_line()
    gated = [
        r
        for r in result["rows"]
        if r["status"] == PASS and r.get("path") and r["p50_ms"] is not None and r.get("macro_auc") is not None
        if r["backend"] != "PyTorch eager" and "CPU default" not in r["precision"]
    ]
    int8 = min((r for r in gated if r["compute"] == "int8"), key=lambda r: r["p50_ms"])
    flt = min((r for r in gated if r["compute"] != "int8"), key=lambda r: r["p50_ms"])
    assert goals["int8"] == f"{int8['backend']} {int8['precision']}" and "INT8" in goals["int8"]
    assert goals["float"] == f"{flt['backend']} {flt['precision']}"
    speed = goals["int8_vs_pytorch"]
    assert speed["value"] == pytest.approx(int8["speedup"]) and speed["target"] == INT8_VS_PYTORCH
    assert speed["met"] == (int8["speedup"] >= INT8_VS_PYTORCH)
    bound = goals["int8_throughput_vs_bound"]
    assert bound["value"] == pytest.approx(int8["fraction_of_peak"]) and bound["target"] == pytest.approx(1 / 3)
    assert bound["met"] == (int8["fraction_of_peak"] >= INT8_SHARE_OF_BOUND)
    versus = goals["int8_vs_float"]
    assert versus["value"] == pytest.approx(flt["p50_ms"] / int8["p50_ms"])
    vnni = result["machine"]["flags"].get("avx512_vnni") or result["machine"]["flags"].get("avx_vnni")
    assert (versus["target"] == 1.5) if vnni else (versus["target"] is None and versus["met"] is None)
    # MXA's overhead needs a second model: named, not invented.
    assert goals["mxa_overhead"]["value"] is None and goals["mxa_overhead"]["met"] is None
    assert "mxa_overhead.py" in goals["mxa_overhead"]["note"]
    for g in ("int8_vs_pytorch", "int8_throughput_vs_bound", "int8_vs_float", "mxa_overhead"):
        assert goals[g]["compares"]


def test_goals_without_a_gated_int8_say_so():
    from mxa_edge.bench.goals import goal_ratios

    row = {
        "group": "g",
        "status": PASS,
        "p50_ms": 2.0,
        "path": "/x",
        "backend": "ONNX Runtime",
        "precision": "FP32",
        "compute": "fp32",
        "macro_auc": 0.7,
        "speedup": 3.0,
        "fraction_of_peak": 0.1,
    }
    goals = goal_ratios([row], 1, 8, {"avx512f": True, "avx512_vnni": False})["g"]
    assert goals["int8"] is None and goals["float"] == "ONNX Runtime FP32"
    assert goals["int8_vs_pytorch"]["value"] is None and goals["int8_vs_pytorch"]["met"] is False
    assert "no gated INT8" in goals["int8_vs_pytorch"]["note"]
    assert goals["int8_vs_float"]["target"] is None and "no VNNI" in goals["int8_vs_float"]["note"]
    assert "(no VNNI)" in goals["isa"]


def test_peak_probe_budget_counts_the_first_call():
    """A CPU without a fast kernel: every call is slow, the first one included; the probe
    must stop once its budget is spent instead of running all repeats (minutes on AVX2)."""
    import time

    from mxa_edge.bench.peak import _best_gflops

    calls = []

    def slow_gemm():
        calls.append(1)
        time.sleep(0.2)

    t = time.perf_counter()
    gflops = _best_gflops(slow_gemm, 1024, repeats=20, budget=0.3)
    assert len(calls) == 2 and time.perf_counter() - t < 1.0
    assert 0 < gflops <= 2.0 * 1024**3 / 0.2 / 1e9
