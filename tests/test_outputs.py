"""Outputs never overwrite inputs (issue 26): every user-named output is checked before any work.

Real CLI calls on a real small artifact: predict's --csv/--overlay, report's --out, bench's
--json/--plot and export's --out. Each refusal exits 2 with one line naming the path, and the
file it protects is byte-identical afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import quick_run

CLI = [sys.executable, "-m", "mxa_edge_cli.app"]


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MXA_EDGE_DEBUG", None)
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _refused(proc: subprocess.CompletedProcess, path, *words: str) -> str:
    """Exit 2 (ConfigError) with one ``error:`` line that names ``path`` and says ``words``."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert str(path) in line, line
    for w in words:
        assert w in line, line
    return line


def _write_png(path: Path, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (96, 80), dtype=np.uint8), mode="L").save(path)
    return path


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(run, artifact): a quick run and its FP32 ONNX export."""
    pytest.importorskip("onnx")
    from mxa_edge.torch_side.export import export_run

    base = tmp_path_factory.mktemp("outputs")
    run = quick_run(base)
    return run, export_run(run, "onnx", base / "onnx-fp32", n_boot=50).artifact


@pytest.fixture
def art(built, tmp_path) -> Path:
    """A fresh copy of the artifact, so a test that damaged it cannot hide it from the next."""
    copy = tmp_path / "onnx-fp32"
    shutil.copytree(built[1], copy)
    return copy


@pytest.fixture
def image(tmp_path) -> Path:
    return _write_png(tmp_path / "chest.png")


def _digest(path: Path) -> bytes:
    return Path(path).read_bytes()


# ---------------------------------------------------------------------------------- predict


def test_predict_csv_inside_the_artifact_is_refused(art, image):
    model = art / "model.onnx"
    before = _digest(model)
    for force in ((), ("--force",)):
        proc = _cli("predict", image, "--model", art, "--csv", model, *force)
        _refused(proc, model, "inside the mxa-edge artifact")
    assert _digest(model) == before


def test_predict_csv_over_the_input_image_is_refused(art, image):
    before = _digest(image)
    for force in ((), ("--force",)):
        proc = _cli("predict", image, "--model", art, "--csv", image, *force)
        _refused(proc, image, "is an input of this command")
    assert _digest(image) == before


def test_predict_csv_over_a_hard_link_to_an_input_is_refused(art, image, tmp_path):
    link = tmp_path / "results.csv"
    os.link(image, link)
    _refused(_cli("predict", image, "--model", art, "--csv", link, "--force"), link, "is an input")
    assert _digest(image) == _digest(link)


def test_predict_csv_over_a_foreign_file_needs_force(art, image, tmp_path):
    foreign = tmp_path / "patients.csv"
    foreign.write_text("id,name\n1,someone\n")
    before = _digest(foreign)
    _refused(_cli("predict", image, "--model", art, "--csv", foreign), foreign, "--force", "not a predict CSV")
    assert _digest(foreign) == before
    proc = _cli("predict", image, "--model", art, "--csv", foreign, "--force", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert foreign.read_text().startswith("file,status,message")


def test_predict_reruns_over_its_own_csv_and_overlays(art, image, tmp_path):
    from mxa_edge.support.outputs import OVERLAY_PNG_SOFTWARE, png_software

    out, overlays = tmp_path / "out.csv", tmp_path / "overlays"
    listing = sorted(p.name for p in art.iterdir())
    for _ in range(2):
        proc = _cli("predict", image, "--model", art, "--csv", out, "--overlay", overlays, "--quiet")
        assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("file,status,message")
    assert png_software(overlays / "chest.overlay.png") == OVERLAY_PNG_SOFTWARE
    assert sorted(p.name for p in art.iterdir()) == listing


def test_predict_overlay_over_a_foreign_png_needs_force(art, image, tmp_path):
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    foreign = _write_png(overlays / "chest.overlay.png", seed=5)  # a PNG someone else wrote, same name
    before = _digest(foreign)
    _refused(_cli("predict", image, "--model", art, "--overlay", overlays), foreign, "--force")
    assert _digest(foreign) == before
    proc = _cli("predict", image, "--model", art, "--overlay", overlays, "--force", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert _digest(foreign) != before


def test_predict_overlay_folder_inside_the_artifact_is_refused(art, image):
    _refused(_cli("predict", image, "--model", art, "--overlay", art / "overlays"), art / "overlays", "artifact")
    assert not (art / "overlays").exists()


def test_predict_output_under_a_file_is_refused(art, image):
    target = image / "out.csv"
    _refused(_cli("predict", image, "--model", art, "--csv", target), target, f"{image.absolute()} is a file")


# ---------------------------------------------------------------------------------- report


def test_report_out_over_the_run_weights_is_refused(built, art):
    run = built[0]
    weights = run / "weights.safetensors"
    before = _digest(weights)
    for force in ((), ("--force",)):
        _refused(_cli("report", art, "--out", weights, *force), weights, "inside the mxa-edge training run")
    assert _digest(weights) == before
    _refused(_cli("report", art, "--out", art / "report.html", "--force"), art / "report.html", "artifact")
    assert not (art / "report.html").exists()


def test_report_default_is_beside_not_inside_and_reruns(art, tmp_path):
    from mxa_edge.support.outputs import REPORT_META

    cwd = tmp_path / "here"
    cwd.mkdir()
    listing = sorted(p.name for p in art.iterdir())
    for _ in range(2):  # the second run replaces the first report: a previous output
        proc = _cli("report", art, "--gallery", "0", "--n-boot", "0", "--quiet", cwd=cwd)
        assert proc.returncode == 0, proc.stderr
    page = cwd / f"{art.name}.report.html"
    assert REPORT_META in page.read_text(encoding="utf-8")[:4096]
    assert sorted(p.name for p in art.iterdir()) == listing
    foreign = cwd / "notes.html"
    foreign.write_text("<html>mine</html>")
    _refused(_cli("report", art, "--out", foreign, cwd=cwd), foreign, "--force")
    assert foreign.read_text() == "<html>mine</html>"


# ---------------------------------------------------------------------------------- bench


def test_bench_outputs_are_checked_before_timing(built, art, tmp_path):
    foreign = tmp_path / "results.json"
    foreign.write_text('{"mine": 1}')
    t0 = time.monotonic()
    _refused(_cli("bench", art, "--json", foreign, "--no-export-missing"), foreign, "not a bench JSON", "--force")
    _refused(_cli("bench", art, "--plot", art / "bench.png"), art / "bench.png", "artifact")
    weights = built[0] / "weights.safetensors"
    _refused(_cli("bench", art, "--json", weights, "--force"), weights, "training run")
    assert time.monotonic() - t0 < 120  # refused at once, not after minutes of timing
    assert foreign.read_text() == '{"mine": 1}'
    assert not (art / "bench.png").exists()


def test_bench_markers_are_recognized(built, tmp_path):
    pytest.importorskip("matplotlib")
    from mxa_edge.bench import plot_latency_auc
    from mxa_edge.support.errors import ConfigError
    from mxa_edge.support.fileio import write_json
    from mxa_edge.support.outputs import BENCH_PNG_SOFTWARE, check_output, png_software

    result = {
        "rows": [
            {
                "group": "g",
                "model": "m0",
                "backend": "ONNX Runtime",
                "precision": "fp32",
                "status": "pass",
                "p50_ms": 1.0,
                "macro_auc": 0.6,
            }
        ],
        "settings": {"latency_batch": 1, "threads": 1},
        "machine": {},
        "compute_bound": {},
    }
    png, js = tmp_path / "plot.png", tmp_path / "bench.json"
    plot_latency_auc(result, png)
    write_json(js, result)
    assert png_software(png) == BENCH_PNG_SOFTWARE
    assert check_output(png, "bench-plot") == png and check_output(js, "bench-json") == js
    run = built[0]
    for name, kind in (("bench.json", "bench-json"), ("bench.png", "bench-plot")):
        check_output(run / name, kind)  # bench's own default beside the run it measured
    with pytest.raises(ConfigError, match="inside the mxa-edge training run"):
        check_output(run / "other.json", "bench-json")
    with pytest.raises(ConfigError, match="not a bench plot"):
        check_output(_write_png(tmp_path / "photo.png"), "bench-plot")


# ---------------------------------------------------------------------------------- export


def _no_loading(monkeypatch):
    """Make loading the training run fail loudly: a refusal must come before it."""
    from mxa_edge.torch_side.export import pipeline

    def boom(*args, **kwargs):
        raise AssertionError("the training run was loaded before the --out check")

    monkeypatch.setattr(pipeline, "_load", boom)


def test_export_out_under_a_file_is_refused_before_work(built, image, monkeypatch):
    from mxa_edge.support.errors import ConfigError
    from mxa_edge.torch_side.export import export_run

    target = image / "sub"
    _refused(_cli("export", built[0], "--out", target), target, f"{image} is a file, not a folder")
    _no_loading(monkeypatch)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        export_run(built[0], "onnx", target)


def test_export_out_symlink_is_named_as_one(built, art, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(art)
    line = _refused(_cli("export", built[0], "--out", link), link, "is a symlink", str(art.resolve()))
    assert "not a folder" not in line
    assert link.is_symlink() and (art / "manifest.json").is_file()


def test_export_over_an_artifact_with_a_foreign_file_is_refused_before_work(built, art, monkeypatch):
    from mxa_edge.support.errors import ConfigError
    from mxa_edge.torch_side.export import export_run

    notes = art / "notes.txt"
    notes.write_text("sign-off notes")
    t0 = time.monotonic()
    line = _refused(_cli("export", built[0], "--out", art), art, "notes.txt", "move them out")
    assert time.monotonic() - t0 < 60
    assert "model.onnx" not in line and "golden" not in line  # the artifact's own files are not foreign
    _no_loading(monkeypatch)
    with pytest.raises(ConfigError, match="notes.txt"):
        export_run(built[0], "onnx", art)
    assert notes.read_text() == "sign-off notes"


def test_export_removes_its_own_stale_partials_only(built, art):
    from mxa_edge.torch_side.export import export_run

    beside = art.parent
    ours = beside / f".{art.name}.abc.partial"
    kept = [beside / f".{art.name}.x.abc.partial", beside / ".other.abc.partial", beside / f"{art.name}.abc.partial"]
    for d in (ours, *kept):
        d.mkdir()
        (d / "model.onnx").write_text("half")
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    said: list[str] = []
    result = export_run(built[0], "onnx", art, n_boot=50, progress=said.append)  # replaces the artifact copy
    assert result.passed and result.artifact == art.absolute()
    assert not ours.exists()
    assert all(d.is_dir() for d in kept)
    assert any(ours.name in msg for msg in said), said
    assert not [p for p in beside.iterdir() if p.name.endswith(".partial") and p not in kept]
