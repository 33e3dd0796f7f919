"""predict: exported artifact + image files -> probabilities, pixel ROI boxes, CSV, overlays.

The artifacts are made once per session by the real export pipeline (``export_run``) from a
tiny M0+MXA run at 64 px trained for a few SGD steps on phantoms (enough to move the
probabilities away from 0.5, so the parity checks compare something). The CLI runs in
subprocesses; the real-image test runs it with ``import torch`` made to fail.
"""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from mxa_edge.decision.gate import GateSpec
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import InputImageError

SIZE = 64
SHARED = Path(__file__).resolve().parents[2] / "shared"
# The export's drift gate is not what these tests check; bounds wide enough for a tiny model.
ANY_DRIFT = {"gate": GateSpec(1.0, 1.0, "point", 1.0, 1.0, 0.0, 1.0, max_guard_flag_increase=1.0), "n_boot": 0}


def _cli(*args, env_extra: dict | None = None, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    env.pop("MXA_EDGE_DEBUG", None)
    env.update(env_extra or {})
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    code = "import sys; from mxa_edge_cli.app import main; sys.argv[0] = 'mxa-edge'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "predict", *map(str, args)], capture_output=True, text=True, env=env, timeout=180
    )


def _write_png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 80 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 10, (h, w))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(path)
    return path


# --- session artifacts ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def predict_run(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from conftest import quick_run

    tmp = tmp_path_factory.mktemp("predict")
    return quick_run(tmp, size=SIZE, n_train=48, n_valid=24, source_size=96, steps=8, lr=3e-3, seed=0)


@pytest.fixture(scope="session")
def onnx_fp32(predict_run) -> Path:
    pytest.importorskip("onnx")
    from mxa_edge.torch_side.export import export_run

    return export_run(predict_run, "onnx", predict_run.parent / "onnx-fp32", **ANY_DRIFT).artifact


@pytest.fixture(scope="session")
def onnx_int8(predict_run) -> Path:
    pytest.importorskip("onnx")
    from mxa_edge.torch_side.export import export_run

    return export_run(
        predict_run, "onnx", predict_run.parent / "onnx-int8", int8=True, calib_size=16, **ANY_DRIFT
    ).artifact


@pytest.fixture(scope="session")
def two_images(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("valid-images")
    return [_write_png(d / "wide.png", 90, 160, seed=1), _write_png(d / "tall.png", 150, 100, seed=2)]


# --- inputs (no model needed) --------------------------------------------------------------


def test_expand_inputs_files_dirs_globs(tmp_path):
    from mxa_edge.runtime.predict import expand_inputs

    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("a/2.png", "a/1.jpg", "a/deep/3.dcm", "a/notes.txt", "b.jpeg"):
        (tmp_path / rel).write_bytes(b"x")
    files, empty = expand_inputs(
        [tmp_path / "a", str(tmp_path / "*.jpeg"), tmp_path / "b.jpeg", tmp_path / "missing.png"]
    )
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/1.jpg",
        "a/2.png",
        "a/deep/3.dcm",
        "b.jpeg",
        "missing.png",
    ]
    assert empty == []
    files, empty = expand_inputs([tmp_path / "a", str(tmp_path / "*.gif")])
    assert empty == [str(tmp_path / "*.gif")]
    with pytest.raises(InputImageError, match="no images found"):
        expand_inputs([str(tmp_path / "nothing-*.png")])


def test_overlay_keeps_aspect_ratio_and_caps_size():
    from mxa_edge.runtime.overlay import colormap, render_overlay
    from mxa_edge.runtime.predict import PredictionResult

    cm = colormap(np.linspace(0, 1, 11))
    assert cm.shape == (11, 3) and cm.dtype == np.uint8 and not np.array_equal(cm[0], cm[-1])
    gray = np.tile(np.linspace(0, 1, 3000, dtype=np.float32), (2000, 1))
    probs = {k: i / 14 for i, k in enumerate(CHEXPERT_LABELS)}
    res = PredictionResult(
        file="x.png",
        width=3000,
        height=2000,
        model_id="m",
        probabilities=probs,
        thresholds=dict.fromkeys(probs, 0.5),
        positives=[k for k, v in probs.items() if v >= 0.5],
        roi_boxes=[[500, 0, 2500, 2000], [1000, 500, 2000, 1500]],
        attention_box=[500, 0, 2500, 2000],
        attention=np.random.default_rng(0).random((7, 7), dtype=np.float32),
    )
    img = render_overlay(gray, res, max_side=1024)
    assert img.size == (1024, 683) and img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr[..., 0] != arr[..., 2]).any()  # colour (heatmap, boxes) was drawn on the gray image


# --- the model: parity with PyTorch --------------------------------------------------------


def test_fp32_artifact_matches_pytorch(predict_run, onnx_fp32, two_images):
    import torch

    from mxa_edge.imaging.imageio import load_radiograph
    from mxa_edge.runtime.predict import PredictionResult, Predictor
    from mxa_edge.torch_side.models.weights import load_run

    model, run = load_run(predict_run)
    pp = run.preprocess
    grays = [load_radiograph(p) for p in two_images]
    with torch.no_grad():
        ref = model.forward_aux(torch.from_numpy(np.stack([pp(g) for g in grays])))
    ref_probs = run.decision.probabilities(ref["logits"].numpy())  # calibrated, as predict outputs
    assert np.ptp(ref_probs) > 1e-3  # the model is not constant: the comparison means something

    results = list(Predictor(onnx_fp32, threads=1).predict_files(two_images, batch_size=1))
    assert all(isinstance(r, PredictionResult) for r in results)
    got = np.array([[r.probabilities[k] for k in CHEXPERT_LABELS] for r in results])
    assert np.abs(got - ref_probs).max() < 1e-3
    for r, g, roi in zip(results, grays, ref["roi"].numpy()):
        assert (r.height, r.width) == g.shape
        assert np.allclose(r.roi_boxes, pp.box_to_image(roi, *g.shape), atol=0.5)
        assert r.positives == [k for k, _ in r.ranked() if r.probabilities[k] >= r.thresholds[k]]


@pytest.mark.slow
def test_int8_artifact_close_to_pytorch(predict_run, onnx_int8, two_images):
    import torch

    from mxa_edge.imaging.imageio import load_radiograph
    from mxa_edge.runtime.predict import Predictor
    from mxa_edge.torch_side.models.weights import load_run

    model, run = load_run(predict_run)
    pp = run.preprocess
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack([pp(load_radiograph(p)) for p in two_images]))).numpy()
    ref = run.decision.probabilities(logits)
    got = np.array(
        [[r.probabilities[k] for k in CHEXPERT_LABELS] for r in Predictor(onnx_int8).predict_files(two_images)]
    )
    assert np.abs(got - ref).mean() < 0.05


# --- the CLI -------------------------------------------------------------------------------


def test_cli_real_images_without_torch(onnx_fp32, tmp_path):
    images = SHARED / "data" / "real-samples" / "images"
    if not images.is_dir():
        pytest.skip("../shared is absent: real images are not part of the repo")
    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    proc = _cli(images, "--model", onnx_fp32, "--json", pythonpath=blocker)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    files = sorted(p for p in images.iterdir() if p.is_file())
    assert sorted(Path(r["file"]).name for r in results) == [p.name for p in files]
    for r in results:
        findings = r["findings"]
        assert list(findings) == list(CHEXPERT_LABELS)
        probs = {k: f["probability"] for k, f in findings.items()}
        assert all(0.0 <= v <= 1.0 for v in probs.values())
        assert all(f["positive"] == (f["probability"] >= f["threshold"]) and f["policy"] for f in findings.values())
        assert r["positives"] == [k for k in sorted(probs, key=lambda k: -probs[k]) if findings[k]["positive"]]
        assert len(r["roi_boxes"]) == 3  # M0 with MXA per stage: one box per stage
        for x1, y1, x2, y2 in r["roi_boxes"]:
            assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"], (r["file"], r["roi_boxes"])
        assert r["model_id"].startswith("efficientvit-multilabel-m0-mxa-64")


def _multiframe_dicom(path: Path) -> Path:
    from dicom_factory import SC_STORAGE, write_dicom

    frames = np.random.default_rng(0).integers(0, 4095, (3, 32, 32), dtype=np.uint16) / 4095
    return write_dicom(path, frames, sop_class=SC_STORAGE, Modality="CR")


def _huge_png_header(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


def test_cli_bad_files_reported_rest_predicted(onnx_fp32, two_images, tmp_path):
    from PIL import Image

    d = tmp_path / "batch"
    d.mkdir()
    ok = [d / p.name for p in two_images]
    for src, dst in zip(two_images, ok):
        dst.write_bytes(src.read_bytes())
    jpg = d / "full.jpg"
    Image.open(two_images[0]).save(jpg, quality=90)
    bad = {
        "empty.png": b"",
        "truncated.png": two_images[1].read_bytes()[:200],
        "truncated.jpg": jpg.read_bytes()[: len(jpg.read_bytes()) // 3],
        "random.jpg": np.random.default_rng(0).bytes(4096),
        "notes.dcm": b"this is a text file, not DICOM\n" * 10,
    }
    for name, data in bad.items():
        (d / name).write_bytes(data)
    jpg.unlink()
    bad_paths = [d / n for n in bad] + [_huge_png_header(d / "huge.png")]
    ok.append(_multiframe_dicom(d / "cine.dcm"))  # a multi-frame radiograph: its first frame is read

    out_csv = tmp_path / "rows.csv"
    proc = _cli(d, "--model", onnx_fp32, "--json", "--csv", out_csv)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(bad_paths), proc.stderr
    for p in bad_paths:
        assert sum(line.startswith(f"error: {p}: ") for line in error_lines) == 1, (p, proc.stderr)
    # Every input has a row, failed ones with their error: a worklist script sees all of them.
    rows = {r["file"]: r for r in json.loads(proc.stdout)}
    assert sorted(rows) == sorted(map(str, ok + bad_paths))
    assert {f for f, r in rows.items() if r["status"] == "predicted"} == set(map(str, ok))
    for p in bad_paths:
        assert rows[str(p)]["status"] == "error" and rows[str(p)]["error"], rows[str(p)]
        assert f"error: {p}: {rows[str(p)]['error']}" in error_lines
    cine = rows[str(d / "cine.dcm")]["dicom"]
    assert cine["frame"] == 0 and cine["n_frames"] == 3 and cine["modality"] == "CR"
    with out_csv.open(newline="") as f:
        table = {r["file"]: r for r in csv.DictReader(f)}
    assert sorted(table) == sorted(rows)
    for p in bad_paths:
        assert table[str(p)]["status"] == "error" and table[str(p)]["message"] == rows[str(p)]["error"]
    assert table[str(d / "cine.dcm")]["frame"] == "0"


def test_cli_csv_and_overlay(onnx_fp32, two_images, tmp_path):
    from PIL import Image

    out_csv, overlays = tmp_path / "out" / "predictions.csv", tmp_path / "overlays"
    proc = _cli(
        *two_images, "--model", onnx_fp32, "--csv", out_csv, "--overlay", overlays, "--batch", "1", "--threads", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Probability" in proc.stdout  # the human table went to stdout
    with out_csv.open(newline="") as f:
        rows = list(csv.reader(f))
    fields = ("probability", "positive", "threshold", "policy")
    dicom = ["study_uid", "series_uid", "sop_uid", "modality", "body_part", "view_position", "frame"]
    assert rows[0] == [
        "file",
        "status",
        "message",
        *dicom,
        "in_distribution",
        "ood_score",
        "ood_threshold",
        "positives",
        *(f"{k} {f}" for k in CHEXPERT_LABELS for f in fields),
    ]
    assert len(rows) == 1 + len(two_images)
    assert [r[0] for r in rows[1:]] == [str(p) for p in two_images]
    for r in rows[1:]:
        cells = dict(zip(rows[0], r))
        for k in CHEXPERT_LABELS:
            p, t = float(cells[f"{k} probability"]), float(cells[f"{k} threshold"])
            assert 0.0 <= p <= 1.0 and cells[f"{k} positive"] == str(int(p >= t)) and cells[f"{k} policy"]
        assert cells["status"] == "predicted" and cells["in_distribution"] in ("0", "1")
        assert (cells["in_distribution"] == "1") == (float(cells["ood_score"]) <= float(cells["ood_threshold"]))
        assert set(filter(None, cells["positives"].split(";"))) == {
            k for k in CHEXPERT_LABELS if cells[f"{k} positive"] == "1"
        }
    assert not [p for p in out_csv.parent.iterdir() if p.name != out_csv.name]  # no temp file left behind
    for src in two_images:
        with Image.open(src) as a, Image.open(overlays / f"{src.stem}.overlay.png") as b:
            b.load()
            assert b.format == "PNG"
            assert abs(b.width / b.height - a.width / a.height) < 0.02


def test_cli_nothing_found_and_bad_artifact(onnx_fp32, tmp_path):
    proc = _cli(tmp_path / "*.png", "--model", onnx_fp32)
    assert proc.returncode == 3 and "no images found" in proc.stderr and "Traceback" not in proc.stderr
    img = _write_png(tmp_path / "x.png", 64, 64)
    proc = _cli(img, "--model", tmp_path)
    assert proc.returncode == 6 and "not an mxa-edge artifact" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_applies_the_manifests_calibration_and_thresholds(predict_run, onnx_fp32, two_images, tmp_path):
    """A decision rule far from (identity, 0.5): predict must print its calibrated probability
    and decide at its per-finding thresholds, naming the policy that set each."""
    import shutil

    import torch

    from mxa_edge.decision.metrics import sigmoid
    from mxa_edge.formats.artifact import DIGEST_FIELD, manifest_digest
    from mxa_edge.imaging.imageio import load_radiograph
    from mxa_edge.runtime.predict import Predictor
    from mxa_edge.support.fileio import read_json, write_json
    from mxa_edge.torch_side.models.weights import load_run

    art = tmp_path / "custom"
    shutil.copytree(onnx_fp32, art)
    m = read_json(art / "manifest.json")
    scale = {k: 0.5 + 0.1 * i for i, k in enumerate(CHEXPERT_LABELS)}
    bias = {k: -1.0 + 0.15 * i for i, k in enumerate(CHEXPERT_LABELS)}
    thresholds = {k: 0.05 + 0.06 * i for i, k in enumerate(CHEXPERT_LABELS)}
    m["decision"].update(
        scale=scale,
        bias=bias,
        thresholds=thresholds,
        policy="sens:0.90",
        label_source={**{k: "fitted" for k in CHEXPERT_LABELS}, "Fracture": "fallback 0.5: no positives"},
    )
    m.pop(DIGEST_FIELD)
    write_json(art / "manifest.json", {**m, DIGEST_FIELD: manifest_digest(m)})  # as export would sign it

    model, run = load_run(predict_run)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack([run.preprocess(load_radiograph(p)) for p in two_images]))).numpy()
    a = np.array([scale[k] for k in CHEXPERT_LABELS])
    b = np.array([bias[k] for k in CHEXPERT_LABELS])
    expected = sigmoid(a * logits + b)
    results = list(Predictor(art, threads=1).predict_files(two_images))
    for r, want in zip(results, expected):
        d = r.to_dict()["findings"]
        got = np.array([d[k]["probability"] for k in CHEXPERT_LABELS])
        np.testing.assert_allclose(got, want, atol=1e-4)
        for k, p in zip(CHEXPERT_LABELS, want):
            assert d[k]["threshold"] == pytest.approx(thresholds[k])
            if abs(p - thresholds[k]) > 1e-3:
                assert d[k]["positive"] == (p >= thresholds[k]), k
        assert d["Fracture"]["policy"] == "fallback 0.5: no positives" and d["Edema"]["policy"] == "sens:0.90"
    # The thresholds are not 0.5: some decisions differ from what a flat 0.5 would give.
    flat = expected >= 0.5
    custom = expected >= np.array([thresholds[k] for k in CHEXPERT_LABELS])
    assert (flat != custom).any()


# --- input guard ---------------------------------------------------------------------------


def _held_out(run: Path):
    """(frontal gray images of the run's held-out CSV, lateral gray images of both its CSVs: the
    run trained on frontal views only, so no lateral was seen)."""
    from mxa_edge.data.chexpert import read_split
    from mxa_edge.formats import RunRecord
    from mxa_edge.imaging.imageio import load_radiograph

    root = Path(RunRecord.load(run).data.root)
    valid, train = (read_split(root, name, frontal_only=False) for name in ("valid", "train"))
    frontal = [load_radiograph(p) for p, v in zip(valid.paths, valid.views) if v == "Frontal"]
    lateral = [load_radiograph(p) for s in (valid, train) for p, v in zip(s.paths, s.views) if v == "Lateral"]
    return frontal, lateral


def test_artifact_carries_a_fitted_gated_and_verified_input_guard(onnx_fp32):
    from mxa_edge.decision.guard import GUARD_FILE
    from mxa_edge.formats import load_artifact
    from mxa_edge.runtime.verify import verify_artifact

    art = load_artifact(onnx_fp32)
    m = art.manifest
    assert m.outputs[-1] == "features" and GUARD_FILE in m.files
    g = m.guard
    assert g.fitted_on == {"mean_covariance": "train", "scales": "tune", "threshold": "tune"} and g.percentile == 99.0
    assert g.feature_dim == 64 + 128 + 192  # M0's three stage widths, pooled and concatenated
    assert g.image_dim == 6 * 6 + 7 + 4 + 1  # layout, gray-level percentiles, edge energy, symmetry
    assert g.tune_scores["p99"] == pytest.approx(g.threshold)
    held = g.held_out
    # FP32 export: the same features as PyTorch, so the same flags.
    assert held.flag_rate_new == held.flag_rate_ref and held.agreement == 1.0
    # Laterals come from the held-out CSV when it has any (this tiny one may not).
    assert {"inverted", "texture", "document"} <= set(g.challenge) <= {"lateral", "inverted", "texture", "document"}
    assert all(v["n"] > 0 and 0.0 <= v["flagged"] <= 1.0 for v in g.challenge.values())
    drift = json.loads((onnx_fp32 / "drift.json").read_text())
    assert drift["guard"]["flag_rate_delta"] == 0.0 and drift["gate"]["max_guard_flag_increase"] == 1.0
    report = verify_artifact(art, threads=1)
    assert report.passed and report.guard["max_abs_score"] <= report.guard["tolerance"]
    assert report.guard["flag_agreement"] == 1.0


def test_input_guard_flags_what_the_model_was_not_trained_on(predict_run, onnx_fp32):
    """Even for a model trained a few steps at 64 px: held-out frontals mostly pass; laterals,
    inverted films, textures and document pages are flagged."""
    from mxa_edge.data.ood import document_images, inverted, texture_images
    from mxa_edge.data.phantom import render_lateral
    from mxa_edge.runtime.predict import Predictor

    predictor = Predictor(onnx_fp32, threads=1, verify=False)
    frontal, _ = _held_out(predict_run)
    # The phantom generator's own lateral renderer (the tiny dataset has only a lateral or two).
    rng = np.random.default_rng(11)
    lateral = [np.asarray(render_lateral(rng, 96), np.float32) for _ in range(30)]
    lateral = [g / 255.0 if g.max() > 1.0 else g for g in lateral]

    def rate(images):
        return float(np.mean([r.in_distribution is False for r in predictor.predict_arrays(list(images))]))

    rates = {
        "frontal": rate(frontal),
        "lateral": rate(lateral),
        "inverted": rate(inverted(np.stack(frontal))),
        "texture": rate(texture_images(40, 128, seed=3)),
        "document": rate(document_images(40, 128, seed=3)),
    }
    print(rates)
    assert rates["frontal"] <= 0.10, rates
    assert min(rates["inverted"], rates["texture"], rates["document"]) >= 0.9, rates
    assert rates["lateral"] >= 0.9, rates


def test_cli_warns_on_flagged_images_and_strict_inputs_refuses_them(predict_run, onnx_fp32, tmp_path):
    from PIL import Image

    from mxa_edge.data.ood import document_images

    frontal, _ = _held_out(predict_run)
    chest = tmp_path / "chest.png"
    Image.fromarray((frontal[0] * 255).astype(np.uint8)).save(chest)
    page = tmp_path / "page.png"
    Image.fromarray((document_images(1, 200, seed=5)[0] * 255).astype(np.uint8)).save(page)

    proc = _cli(chest, page, "--model", onnx_fp32, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {Path(r["file"]).name: r for r in json.loads(proc.stdout)}
    assert rows["page.png"]["in_distribution"] is False and rows["page.png"]["status"] == "predicted"
    assert rows["page.png"]["ood_score"] > rows["page.png"]["ood_threshold"]
    assert f"warning: {page}: not like the frontal chest radiographs" in proc.stderr

    strict = _cli(chest, page, "--model", onnx_fp32, "--json", "--strict-inputs")
    assert strict.returncode == 3, strict.stderr
    rows = {Path(r["file"]).name: r for r in json.loads(strict.stdout)}
    assert rows["page.png"]["status"] == "error" and "--strict-inputs" in rows["page.png"]["error"]
    assert "findings" not in rows["page.png"]
    assert rows["chest.png"]["status"] == "predicted" and rows["chest.png"]["in_distribution"] is True


# --- DICOM studies -------------------------------------------------------------------------


def _dicom(path: Path, gray: np.ndarray, study: str, series: str, instance: int, **tags) -> Path:
    from dicom_factory import write_dicom

    return write_dicom(path, gray, study=study, series=series, instance=instance, **tags)


def _to_jpeg_lossless(path: Path) -> Path:
    """Re-encode in place as JPEG Lossless, Process 14 SV1 (pydicom cannot encode it; GDCM can)."""
    gdcm = pytest.importorskip("gdcm", reason="python-gdcm writes the JPEG-Lossless test file ([test] extra)")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return path


def test_cli_dicom_study_one_prediction_per_frontal_image_rest_skipped(predict_run, onnx_fp32, tmp_path):
    pytest.importorskip("pylibjpeg", reason="JPEG-Lossless decoding needs pylibjpeg + pylibjpeg-libjpeg")
    from pydicom.uid import generate_uid

    from mxa_edge.imaging.imageio import load_radiograph

    frontal, lateral = _held_out(predict_run)
    folder = tmp_path / "study"
    folder.mkdir()
    study, other_study = generate_uid(), generate_uid()
    chest_series, lat_series, ct_series, hand_series = (generate_uid() for _ in range(4))
    files = {
        "b_pa.dcm": _dicom(
            folder / "b_pa.dcm", frontal[0], study, chest_series, 2, ViewPosition="PA", BodyPartExamined="CHEST"
        ),
        "a_ap_jpegll.dcm": _to_jpeg_lossless(
            _dicom(folder / "a_ap_jpegll.dcm", frontal[1], study, chest_series, 1, ViewPosition="AP")
        ),
        "lat.dcm": _dicom(
            folder / "lat.dcm", lateral[0], study, lat_series, 1, ViewPosition="LL", BodyPartExamined="CHEST"
        ),
        "ct.dcm": _dicom(folder / "ct.dcm", frontal[2], study, ct_series, 1, Modality="CT", BodyPartExamined="CHEST"),
        "hand.dcm": _dicom(folder / "hand.dcm", frontal[3], other_study, hand_series, 1, BodyPartExamined="HAND"),
    }
    # The compressed file really is JPEG Lossless and decodes to the pixels written.
    import pydicom

    ds = pydicom.dcmread(files["a_ap_jpegll.dcm"])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    # Without a window the stored values are stretched min to max (the phantom does not span 0..4095).
    stored = np.round(frontal[1] * 4095)
    expected = (stored - stored.min()) / (stored.max() - stored.min())
    np.testing.assert_allclose(load_radiograph(files["a_ap_jpegll.dcm"]), expected, atol=1e-6)

    out_csv = tmp_path / "study.csv"
    proc = _cli(folder, "--model", onnx_fp32, "--json", "--csv", out_csv)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == set(files)
    predicted = [Path(r["file"]).name for r in rows if r["status"] == "predicted"]
    assert predicted == ["a_ap_jpegll.dcm", "b_pa.dcm"]  # one per frontal image, by instance number
    reasons = {n: r["reason"] for n, r in by_name.items() if r["status"] == "skipped"}
    assert "lateral view (ViewPosition LL)" in reasons["lat.dcm"]
    assert "Modality CT" in reasons["ct.dcm"] and "BodyPartExamined HAND" in reasons["hand.dcm"]
    for name, r in by_name.items():
        d = r["dicom"]
        assert d["study_uid"] == (other_study if name == "hand.dcm" else study)
        assert d["sop_uid"] and d["series_uid"]
    ap = by_name["a_ap_jpegll.dcm"]["dicom"]
    assert ap["view_position"] == "AP" and ap["series_uid"] == chest_series and ap["frame"] is None
    assert "JPEG Lossless" in ap["transfer_syntax"]
    # Grouped: the study's files together, its series in order of appearance, the other study after.
    names = [Path(r["file"]).name for r in rows]
    assert names.index("hand.dcm") == len(names) - 1
    with out_csv.open(newline="") as f:
        table = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    assert table["lat.dcm"]["status"] == "skipped" and "ViewPosition LL" in table["lat.dcm"]["message"]
    assert table["b_pa.dcm"]["study_uid"] == study and table["b_pa.dcm"]["view_position"] == "PA"


def test_undecodable_transfer_syntax_names_what_to_install(tmp_path):
    from mxa_edge.imaging.imageio import load_radiograph

    path = _dicom(tmp_path / "x.dcm", np.random.default_rng(0).random((16, 16)), "1.2.3", "1.2.3.4", 1)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder here
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(path)
    with pytest.raises(InputImageError, match=r"compressed \(MPEG2.*install its decoder \(no decoder is known"):
        load_radiograph(path)


def test_csv_figures_keep_the_decision_checkable_near_the_threshold():
    # A probability 3e-7 under its threshold prints as 0.333332 beside 0.333332 at six decimals: a
    # reader re-checking probability >= threshold would call it positive. Those rows get full precision.
    from mxa_edge_cli.commands.predict import _decision_figures

    assert _decision_figures(0.25, 0.5) == ("0.250000", "0.500000")
    below, thr = 0.3333321, 0.3333324
    prob_text, thr_text = _decision_figures(below, thr)
    assert float(prob_text) == below and float(thr_text) == thr and not float(prob_text) >= float(thr_text)
    prob_text, thr_text = _decision_figures(thr, thr)  # a tie is positive and stays so
    assert float(prob_text) >= float(thr_text)
