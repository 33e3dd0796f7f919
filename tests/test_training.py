"""Real (tiny) training runs: run folder contract, resume after SIGKILL, real pediatric data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import shared_path, tiny_config

from mxa_edge.labels import CHEXPERT_LABELS


def test_run_folder_contract(tiny_run):
    files = {p.name for p in tiny_run.iterdir()}
    assert {"weights.safetensors", "manifest.json", "metrics.json", "checkpoint.pt", "log.jsonl", "curves.png"} <= files
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["labels"] == list(CHEXPERT_LABELS)
    assert manifest["preprocess"]["image_size"] == 64 and manifest["preprocess"]["value_range"] == [-1024.0, 1024.0]
    assert manifest["model"]["mxa"]["placement"] == "stage"
    assert manifest["teacher"]["kind"] == "finetune"
    assert len(manifest["data"]["fingerprint"]["train"]) == 16
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert list(metrics["per_label"]) == list(CHEXPERT_LABELS)
    for m in metrics["per_label"].values():
        assert m["auc"] is None or 0.0 <= m["auc"] <= 1.0
    assert 0.0 <= metrics["macro_auc"] <= 1.0 and 0.0 <= metrics["micro_auc"] <= 1.0
    log = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(r["kd"] > 0 for r in log)


def test_checkpoints_load_with_weights_only_and_reproduce_metrics(tiny_run):
    from mxa_edge.decision.evaluation import evaluate_model
    from mxa_edge.torch_side.models.weights import load_run

    ck = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1
    model, manifest = load_run(tiny_run)
    assert not model.training
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    again = evaluate_model(tiny_run, n_boot=0)
    assert again["macro_auc"] == pytest.approx(metrics["macro_auc"], abs=1e-6)
    loc = again["roi_localization"]
    assert loc["n"] > 0 and loc["n_images"] > 0
    # The untrained ROI predictor (fc weights ~N(0, 0.01), zero bias) gives the same centred box on
    # every image: side min_size + (1 - min_size) / 2 = 0.625, offset (1 - 0.625) / 2.
    init = loc["baselines"]["init_box"]
    np.testing.assert_allclose(init["box_mean"], [0.1875, 0.1875, 0.8125, 0.8125], atol=1e-3)
    assert max(init["box_sd"]) < 1e-3 and init["n"] == loc["n"]
    random_box = loc["baselines"]["random_box"]
    for base in (init, random_box):
        assert 0.0 <= base["hit_rate"] <= 1.0
        gain = base["model_minus_this"]["mean_iou"]["delta"]
        assert gain == pytest.approx(loc["mean_iou"] - base["mean_iou"])


def test_tampered_weights_are_refused(tiny_run, tmp_path):
    import shutil

    from mxa_edge.support.errors import ArtifactError
    from mxa_edge.torch_side.models.weights import load_run

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_run(copy)


def _train_cmd(cfg) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mxa_edge_cli.app",
        "train",
        "--data",
        cfg.data,
        "--out",
        cfg.out,
        "--model",
        "m0",
        "--image-size",
        "64",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--teacher-epochs",
        "1",
        "--quiet",
        "--checkpoint-every",
        "2",
    ]


def test_sigkilled_run_resumes_to_the_same_result(phantom_root, tmp_path, tiny_run):
    """Kill -9 mid-epoch (right after the first mid-epoch checkpoint lands), resume, and
    compare with an uninterrupted run of the same seed."""
    env = {**os.environ, "MXA_EDGE_CACHE": os.environ["MXA_EDGE_CACHE"], "OMP_NUM_THREADS": "1"}
    ref_cfg = tiny_config(phantom_root, tmp_path / "ref")
    subprocess.run(_train_cmd(ref_cfg), check=True, env=env, timeout=600)

    cfg = tiny_config(phantom_root, tmp_path / "killed")
    proc = subprocess.Popen(_train_cmd(cfg), env=env)
    ck = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ck.exists(), "the run ended before its first checkpoint"
    assert not (tmp_path / "killed" / "manifest.json").exists(), "the run should have been killed mid-way"
    state = torch.load(ck, weights_only=True)
    assert state["epoch"] == 0 and 0 < state["next_step"] < 6, "expected a mid-epoch checkpoint"
    subprocess.run(_train_cmd(cfg) + ["--resume"], check=True, env=env, timeout=600)

    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert got["macro_auc"] == pytest.approx(ref["macro_auc"], abs=1e-4)
    from safetensors.numpy import load_file

    a, b = load_file(tmp_path / "ref" / "weights.safetensors"), load_file(tmp_path / "killed" / "weights.safetensors")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4


def test_pediatric_pneumonia_end_to_end(tmp_path):
    from mxa_edge.torch_side.training.pipeline import train

    root = shared_path("data", "pediatric-pneumonia")
    cfg = tiny_config(root, tmp_path / "peds", epochs=1, kd=False, teacher="none", limit_train=160, limit_valid=96)
    metrics = train(cfg)["metrics"]
    evaluable = {k for k, v in metrics["per_label"].items() if v["auc"] is not None}
    assert evaluable == {"No Finding", "Pneumonia"}
    assert metrics["macro_auc"] is not None and metrics["split"] == "valid"

    # Three roles, never mixed: the tuning split (which selected the epoch and fitted the
    # decision rule) shares no patient with the training images, and no image with valid.csv.
    from mxa_edge.formats import RunRecord

    run = RunRecord.load(tmp_path / "peds")
    train_rows, tune_rows, valid_rows = (run.data.read(split) for split in ("train", "tune", "valid"))
    assert len(tune_rows) > 0 and not set(tune_rows.patients) & set(train_rows.patients)
    assert not set(tune_rows.rel_paths) & set(valid_rows.rel_paths)
    assert set(run.data.fingerprint) == {"train", "tune", "valid"}
    assert run.decision.fitted_on["split"] == "tune" and run.decision.policy == "youden"

    # Export works from a run on real data too: INT8 calibrated on its real training images,
    # gated on its real validation images (the two findings the dataset labels).
    from mxa_edge.decision.gate import GateSpec
    from mxa_edge.torch_side.export import export_run

    # A one-epoch model on 96 held-out images: loose bounds (the point is that the chain runs).
    loose = GateSpec(
        0.05,
        0.1,
        max_sens_drop=0.1,
        max_spec_drop=0.1,
        min_agreement=0.8,
        max_ece_increase=0.05,
        max_guard_flag_increase=0.1,
    )
    res = export_run(tmp_path / "peds", "onnx", int8=True, calib_size=24, n_boot=100, gate=loose)
    assert res.passed and (res.artifact / "manifest.json").is_file()
    gated = {k for k, v in res.drift["per_label"].items() if v["delta"] is not None}
    assert gated == {"No Finding", "Pneumonia"}
    assert res.manifest.calibration["n"] == 24


def test_resolve_device():
    from mxa_edge.support.errors import ConfigError
    from mxa_edge.torch_side.training.config import TrainConfig, resolve_device

    assert TrainConfig().device == "auto"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")


def test_student_weights_start_the_run_and_are_recorded(phantom_root, tmp_path):
    """--student-weights: a timm efficientvit_m0 checkpoint starts the backbone; the manifest records
    the file's SHA-256 and what was loaded; eval's untrained baseline rebuilds the same start."""
    import timm

    from mxa_edge.decision.evaluation import evaluate_model
    from mxa_edge.formats import RunRecord
    from mxa_edge.support.fileio import sha256_file
    from mxa_edge.torch_side.training.pipeline import train

    weights = tmp_path / "efficientvit_m0.pth"
    torch.save(timm.create_model("efficientvit_m0", pretrained=False).state_dict(), weights)
    cfg = tiny_config(
        phantom_root, tmp_path / "run", epochs=1, kd=False, teacher="none", student_weights=str(weights), n_boot=0
    )
    train(cfg)
    run = RunRecord.load(tmp_path / "run")
    init = run.student_init
    assert init["kind"] == "pretrained" and init["sha256"] == sha256_file(weights)
    assert init["timm_model"] == "efficientvit_m0" and init["new"]["backbone.head.linear"] == 2
    assert init["loaded"] > 600 and "backbone.patch_embed.conv1.conv.weight" in init["adapted"]
    assert run.train_config["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # resolved from auto

    metrics = evaluate_model(tmp_path / "run", n_boot=0, limit=64)
    assert "mean_iou" in metrics["roi_localization"]["baselines"]["init_box"]
    weights.write_bytes(weights.read_bytes() + b"\0")  # changed: the run's start can no longer be rebuilt
    metrics = evaluate_model(tmp_path / "run", n_boot=0, limit=64)
    assert "not on this machine unchanged" in metrics["roi_localization"]["baselines"]["init_box"]["unavailable"]
