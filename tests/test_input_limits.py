"""predict's input limits (issue 26): memory bounded per image, never per batch, and no hang on
a FIFO, socket or device given as an image.

The artifact is made once per session by the real export pipeline from a tiny M0+MXA run (as in
test_predict); the CLI runs in subprocesses under ONNX Runtime. Peak memory is the child's
``ru_maxrss`` read by a fresh helper process, so only that one child is counted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mxa_edge.support.errors import InputImageError

_PREDICT = "import sys; from mxa_edge_cli.app import main; sys.argv[0] = 'mxa-edge'; main()"

# Runs its arguments as a command and prints "<exit status> <the child's peak RSS in bytes>".
_PEAK_RSS = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
print(proc.returncode, peak)
"""


def _predict_cmd(*args) -> list[str]:
    return [sys.executable, "-c", _PREDICT, "predict", *map(str, args)]


def _env() -> dict:
    env = dict(os.environ)
    env.pop("MXA_EDGE_DEBUG", None)
    return env


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> Path:
    """An FP32 ONNX artifact of a tiny model (the export's drift gate is not what is tested here)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from conftest import quick_run

    from mxa_edge.decision.gate import GateSpec
    from mxa_edge.torch_side.export import export_run

    tmp = tmp_path_factory.mktemp("input-limits")
    run = quick_run(tmp, size=64, n_train=48, n_valid=24, source_size=96, steps=8, lr=3e-3, seed=0)
    wide = GateSpec(
        max_macro_drop=1.0,
        max_drop=1.0,
        max_sens_drop=1.0,
        max_spec_drop=1.0,
        min_agreement=0.0,
        max_ece_increase=1.0,
        max_guard_flag_increase=1.0,
    )
    artifact = export_run(run, "onnx", tmp / "onnx-fp32", gate=wide, n_boot=0).artifact
    # First use on a machine verifies the golden vectors: done here so no measured run pays for it.
    from mxa_edge.runtime.predict import Predictor

    Predictor(artifact)
    return artifact


def _png16(path: Path, side: int, seed: int = 0) -> Path:
    """A 16-bit gray PNG, smooth (quick to write and read) but not constant."""
    from PIL import Image

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = 20000 + 15000 * np.sin(6 * xx + seed) * np.cos(4 * yy)
    Image.fromarray(img.astype(np.uint16)).save(path, compress_level=1)
    return path


def _png8(path: Path, side: int = 96) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(30, 220, (side, side), dtype=np.uint8), mode="L").save(path)
    return path


# --- non-regular files ------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_hanging(artifact, tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    good = _png8(tmp_path / "good.png")
    try:
        out = subprocess.run(
            _predict_cmd(fifo, good, "--model", artifact, "--json"),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("predict hung on a FIFO named x.png (it was opened before being checked)")
    assert out.returncode == 3, out.stderr
    rows = {Path(r["file"]).name: r for r in json.loads(out.stdout)}
    assert rows["x.png"]["status"] == "error"
    assert "not a regular file (a FIFO)" in rows["x.png"]["error"]
    assert f"{fifo}: not a regular file" in out.stderr
    assert rows["good.png"]["status"] == "predicted"


def test_sockets_devices_and_directories_are_errors_not_opened(tmp_path):
    from mxa_edge.imaging.dicom import is_dicom_file
    from mxa_edge.imaging.imageio import load_radiograph
    from mxa_edge.runtime.predict import plan_inputs

    regular = _png8(tmp_path / "ok.png")
    link = tmp_path / "link.png"
    link.symlink_to(regular)
    paths = [regular, link, tmp_path / "missing.png", tmp_path]
    if Path("/dev/null").exists():
        paths.append(Path("/dev/null"))
    sock_path = tmp_path / "s.png"
    if hasattr(socket, "AF_UNIX") and len(str(sock_path)) < 100:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(sock_path))  # the socket file stays after the socket is closed
        paths.append(sock_path)
    problems = {p.path: p.error for p in plan_inputs(paths)}
    assert problems[regular] is None and problems[link] is None  # a symlink to a regular file is fine
    assert problems[tmp_path / "missing.png"] is None  # reported as "file not found" when read
    assert problems[tmp_path].startswith("not a regular file (a directory)")
    if Path("/dev/null") in problems:
        assert problems[Path("/dev/null")].startswith("not a regular file (a character device)")
        assert not is_dicom_file("/dev/null")
        with pytest.raises(InputImageError, match=r"not a regular file \(a character device\)"):
            load_radiograph("/dev/null")
    if sock_path in problems:
        assert problems[sock_path].startswith("not a regular file (a socket)")
        with pytest.raises(InputImageError, match=r"not a regular file \(a socket\)"):
            load_radiograph(sock_path)
    assert load_radiograph(link).shape == (96, 96)


# --- memory: one image at a time ---------------------------------------------------------------

SIDE = 5000  # 25 MP per image: a float32 copy is 100 MB
N_BIG = 6
# What one image may cost at the peak, in bytes per pixel: predict_files states about 8 (PNG
# decode, then the float32 image with Pillow's float copy in Preprocess); 12 leaves room for
# allocator slack. Keeping a batch's decoded images (the old behaviour) costs 4 bytes per pixel
# per image held on top of a float64 decode, so 6 images exceed this by far.
BYTES_PER_PIXEL = 12


def _peak_rss(*args) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *_predict_cmd(*args)], capture_output=True, text=True, env=_env()
    )
    rc, peak = out.stdout.split()
    assert rc == "0", out.stderr
    return int(peak)


@pytest.mark.skipif(sys.platform == "win32", reason="resource.getrusage is POSIX only")
def test_peak_memory_is_one_image_not_one_batch(artifact, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    _png16(small / "s.png", 256)
    big = tmp_path / "big"
    big.mkdir()
    first = _png16(big / "b0.png", SIDE)
    for i in range(1, N_BIG):
        shutil.copyfile(first, big / f"b{i}.png")

    baseline = _peak_rss(small, "--model", artifact, "--batch", "8", "-q")
    peak = _peak_rss(big, "--model", artifact, "--batch", "8", "-q")
    bound = baseline + BYTES_PER_PIXEL * SIDE * SIDE
    mib = 2**20
    assert peak < bound, (
        f"predicting {N_BIG} images of {SIDE}x{SIDE} in one batch peaked at {peak / mib:.0f} MiB; "
        f"bound {bound / mib:.0f} MiB = one small image's run ({baseline / mib:.0f} MiB) "
        f"+ {BYTES_PER_PIXEL} B x {SIDE * SIDE:,} px of ONE image"
    )
