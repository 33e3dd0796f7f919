"""Runtime side (no torch needed at run time): artifact verification and both engines."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
from test_export import SIZE, _export, tiny_run  # noqa: E402,F401  (session fixture shared)

from mxa_edge.support.errors import ArtifactError, ConfigError  # noqa: E402


def test_runtime_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, mxa_edge.formats, mxa_edge.runtime.engines; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_engines_agree_with_manifest(tiny_run):
    from mxa_edge.backends.onnxruntime import OrtEngine
    from mxa_edge.backends.openvino import OpenVinoEngine
    from mxa_edge.formats import load_artifact
    from mxa_edge.runtime.engines import open_engine

    ort_art = load_artifact(_export(tiny_run, "onnx", "onnx-fp32", reuse=True))
    ov_art = load_artifact(_export(tiny_run, "openvino", "ov-fp32", reuse=True))
    assert isinstance(open_engine(ort_art), OrtEngine)
    ov = open_engine(ov_art, threads=1)
    assert isinstance(ov, OpenVinoEngine) and ov.inference_precision in ("f32", "float32")
    x = np.random.default_rng(0).uniform(-1024, 1024, (2, 1, SIZE, SIZE)).astype(np.float32)
    a, b = open_engine(ort_art).run(x), ov.run(x)
    assert set(a) == set(b) == {"logits", "roi", "attention", "attention_box", "features"}
    assert np.abs(a["logits"] - b["logits"]).max() < 1e-3
    from mxa_edge.formats import RunRecord

    run = RunRecord.load(tiny_run)  # the run's decision rule travels into every artifact, unchanged
    assert ov_art.decision == run.decision == ort_art.decision and run.decision.fitted_on["split"] == "tune"
    assert ov_art.thresholds["Cardiomegaly"] == run.decision.thresholds["Cardiomegaly"]
    assert ov_art.preprocess.image_size == SIZE
    with pytest.raises(ValueError):
        open_engine(ort_art).run(x[:, 0])


def test_bad_manifests(tmp_path):
    from mxa_edge.formats import load_artifact

    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "mxa-edge-artifact", "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version"):
        load_artifact(tmp_path)


def test_unknown_target_is_a_config_error(tiny_run):
    from mxa_edge.torch_side.export import export_run

    with pytest.raises(ConfigError):
        export_run(tiny_run, "coreml")


def test_openvino_compile_cache_and_read_only_fallback(tiny_run, tmp_path, monkeypatch):
    import os

    from mxa_edge.backends.openvino import openvino_cache_dir
    from mxa_edge.formats import load_artifact
    from mxa_edge.runtime.engines import open_engine

    art = load_artifact(_export(tiny_run, "openvino", "ov-fp32", reuse=True))
    monkeypatch.setenv("MXA_EDGE_CACHE", str(tmp_path / "cache"))
    first, second = open_engine(art, threads=1), open_engine(art, threads=1)
    assert first.cache_dir == tmp_path / "cache" / "openvino" and any(first.cache_dir.iterdir())
    assert not first.loaded_from_cache and second.loaded_from_cache
    x = np.zeros((1, 1, SIZE, SIZE), np.float32)
    assert np.array_equal(first.run(x)["logits"], second.run(x)["logits"])
    # A cache folder that cannot be created (read-only home): no caching, same results.
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MXA_EDGE_CACHE", str(blocker / "cache"))
    assert openvino_cache_dir() is None
    third = open_engine(art, threads=1)
    assert third.cache_dir is None and not third.loaded_from_cache
    assert np.array_equal(third.run(x)["logits"], first.run(x)["logits"])
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        monkeypatch.setenv("MXA_EDGE_CACHE", str(ro))
        assert openvino_cache_dir() is None
