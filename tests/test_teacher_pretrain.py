"""The fine-tuned teacher's pretraining on a separate phantom set (``--teacher-pretrain-images``):
disjoint from the run's data, generated once, its weights cached and reused, part of the
fine-tuned teacher's cache key, and recorded in metrics.json."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from conftest import tiny_config

import mxa_edge.data.phantom as phantom
from mxa_edge.data.default import DEFAULT_SEED, PRETRAIN_SEED, pretrain_phantom_root
from mxa_edge.support.errors import ConfigError
from mxa_edge.support.progress import SILENT
from mxa_edge.torch_side.training import pipeline
from mxa_edge.torch_side.training import teacher as teacher_story

N_PRETRAIN = 24


def _images(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of the bytes, for every image in the root's CSVs."""
    out = {}
    for split in ("train", "valid"):
        with open(root / f"{split}.csv", newline="") as f:
            for row in csv.DictReader(f):
                out[row["Path"]] = hashlib.sha256((root.parent / row["Path"]).read_bytes()).hexdigest()
    return out


def _config(phantom_root, out: Path, **overrides):
    base = dict(
        epochs=1,
        batch_size=8,
        limit_train=16,
        limit_valid=24,
        n_boot=0,
        teacher_pretrain_images=N_PRETRAIN,
        teacher_pretrain_epochs=1,
        device="cpu",
    )
    return tiny_config(phantom_root, out, **{**base, **overrides})


def test_pretraining_set_is_generated_once_and_disjoint_from_the_data(phantom_root, tmp_path, monkeypatch):
    calls = []
    real = phantom.generate_phantom_dataset
    monkeypatch.setattr(phantom, "generate_phantom_dataset", lambda *a, **k: calls.append(k) or real(*a, **k))
    root = pretrain_phantom_root(N_PRETRAIN, 64)
    csv_mtime = (root / "train.csv").stat().st_mtime_ns
    assert pretrain_phantom_root(N_PRETRAIN, 64) == root
    assert len(calls) == 1 and calls[0]["seed"] == PRETRAIN_SEED and calls[0]["size"] == 64
    assert (root / "train.csv").stat().st_mtime_ns == csv_mtime, "the second call regenerated the set"

    pretrain = _images(root)
    assert len(pretrain) == N_PRETRAIN  # train only: valid.csv is empty
    # The default dataset's generator at the same size, and the tests' run data: no shared
    # path, no shared image.
    default_like = phantom.generate_phantom_dataset(tmp_path, n_train=N_PRETRAIN, n_valid=8, size=64, seed=DEFAULT_SEED)
    for other in (_images(default_like), _images(phantom_root)):
        assert not set(pretrain) & set(other)
        assert not set(pretrain.values()) & set(other.values())


def test_fine_tune_cache_key_includes_the_pretraining(phantom_root, tmp_path):
    cfg = _config(phantom_root, tmp_path / "k")
    data = pipeline._Data(cfg, SILENT)

    def pretrain(n: int) -> dict:
        c = _config(phantom_root, tmp_path / "k", teacher_pretrain_images=n)
        return {"pretrain_key": teacher_story._pretrain_cache_key(c, 64, None), "pretrain_sha256": "0" * 64}

    keys = {
        teacher_story._teacher_cache_key(cfg, data, None),
        teacher_story._teacher_cache_key(cfg, data, None, pretrain(N_PRETRAIN)),
        teacher_story._teacher_cache_key(cfg, data, None, pretrain(2 * N_PRETRAIN)),
        teacher_story._teacher_cache_key(cfg, data, None, {**pretrain(N_PRETRAIN), "pretrain_sha256": "1" * 64}),
    }
    assert len(keys) == 4
    cfg_more_epochs = _config(phantom_root, tmp_path / "k", teacher_pretrain_epochs=2)
    assert teacher_story._pretrain_cache_key(cfg_more_epochs, 64, None) != pretrain(N_PRETRAIN)["pretrain_key"]


def test_pretrained_teacher_is_cached_reused_and_recorded(phantom_root, tmp_path, monkeypatch):
    tasks = []
    real_loop = pipeline.run_loop

    def counting_loop(*args, **kwargs):
        tasks.append(args[6].task)
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_loop", counting_loop)
    monkeypatch.setattr(teacher_story, "run_loop", counting_loop)
    pipeline.train(_config(phantom_root, tmp_path / "first"))
    assert tasks == ["teacher pretrain", "teacher", "student"]
    teacher = json.loads((tmp_path / "first" / "metrics.json").read_text())["teacher"]
    assert teacher["pretrain_images"] == N_PRETRAIN and teacher["pretrain_epochs"] == 1
    assert teacher["kind"] == "finetune" and teacher["valid_macro_auc"] is not None
    assert "tune_macro_auc" in teacher and "pretrain_tune_macro_auc" in teacher
    pretrained = list((teacher_story.cache_dir() / "teachers").glob("densenet121-pretrain-*.safetensors"))
    assert len(pretrained) == 1
    mtime = pretrained[0].stat().st_mtime_ns

    # Another run's teacher (another training split: a new fine-tuning) starts from the cached
    # pretrained weights.
    tasks.clear()
    cfg = _config(phantom_root, tmp_path / "second", limit_train=24)
    _, info = pipeline.finetune_teacher(cfg, pipeline._Data(cfg, SILENT), SILENT)
    assert tasks == ["teacher"]
    assert pretrained[0].stat().st_mtime_ns == mtime
    assert info["pretrain_images"] == N_PRETRAIN and info["pretrain_cache"] == str(pretrained[0])


def test_pretraining_needs_the_fine_tuned_teacher(phantom_root, tmp_path):
    with pytest.raises(ConfigError, match="--teacher finetune"):
        pipeline.build_teacher(_config(phantom_root, tmp_path / "x", teacher="xrv"), None, None)
