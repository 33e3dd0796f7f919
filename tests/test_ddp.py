"""DistributedDataParallel on CPU (gloo, 2 processes) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _cmd(data, out, extra=()):
    return [
        sys.executable,
        "-m",
        "mxa_edge_cli.app",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        "m0",
        "--image-size",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--no-kd",
        "--quiet",
        "--no-ema",
        *extra,
    ]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(phantom_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cmd(phantom_root, tmp_path / "single"), check=True, env=env, timeout=600)
    # gloo on CPU: --device auto would pick a GPU where one exists.
    subprocess.run(
        _cmd(phantom_root, tmp_path / "ddp", ["--device", "cpu", "--devices", "2"]), check=True, env=env, timeout=600
    )
    single = [json.loads(x) for x in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    ddp = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in ddp] == [1, 2], "rank 0 alone writes one log line per epoch"
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "backend": "gloo"}
    # Same data order, augmentations, loss normalisation and global batch; BatchNorm sees each
    # rank's half-batch on CPU (SyncBatchNorm is GPU-only), so losses agree closely, not exactly.
    for a, b in zip(single, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.01), (a, b)
