"""INT8 that behaves the same on every x86 CPU (issue 25).

The AVX2 harness is real: ``qemu-x86_64 -cpu Haswell`` (Debian's qemu-user; ``.ci/run`` installs
it) shows a process an AVX2-only CPUID, so ONNX Runtime's MLAS and oneDNN run the saturating
``VPMADDUBSW`` kernels of an AVX2 workstation. Tests that need it skip with the reason where it
is missing; tests that need a VNNI build CPU (to show the difference between the two kernel
paths) skip on an AVX2 machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from test_export import _export, tiny_run  # noqa: E402,F401

from mxa_edge.formats import Int8Scheme  # noqa: E402
from mxa_edge.runtime import kernel_paths  # noqa: E402
from mxa_edge.support.machine import VNNI_CLASSES, cpuid_flags, int8_kernel_class  # noqa: E402

CLI = [sys.executable, "-m", "mxa_edge_cli.app"]


def _need_harness():
    if kernel_paths.avx2_prefix() is None:
        pytest.skip(f"qemu-x86_64 is missing: {kernel_paths.QEMU_HINT}")


def _need_vnni_build_cpu():
    if int8_kernel_class() not in VNNI_CLASSES:
        pytest.skip(
            f"this CPU's INT8 kernels are {int8_kernel_class()}: the VNNI path cannot be emulated here, so the two "
            "kernel paths cannot be compared (the static 7-bit bound is checked instead)"
        )


def _as_avx2(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "mxa_edge.runtime.kernel_paths", "exec", "--", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def test_int8_kernel_class_from_flags():
    base = dict.fromkeys(("avx2", "fma"), True)
    assert int8_kernel_class(base) == "avx2"
    assert int8_kernel_class({**base, "avx512f": True}) == "avx512"  # AVX-512 without VNNI saturates too
    assert int8_kernel_class({**base, "avx512f": True, "avx512_vnni": True}) == "avx512-vnni"
    assert int8_kernel_class({**base, "avx_vnni": True}) == "avx-vnni"
    assert int8_kernel_class({**base, "avx512f": True, "avx512_vnni": True, "amx_int8": True}) == "amx"
    assert Int8Scheme.PORTABLE.max_weight * 255 * 2 <= 32767 < Int8Scheme.VNNI.max_weight * 255 * 2


def test_isa_detection_reads_cpuid_not_only_proc_cpuinfo():
    """Under the harness /proc/cpuinfo still lists the host's flags; the class must be avx2."""
    _need_harness()
    if cpuid_flags() is None:
        pytest.skip("CPUID is not readable on this platform")
    code = (
        "from mxa_edge.support.machine import int8_kernel_class, isa_line; print(int8_kernel_class(), '|', isa_line())"
    )
    out = _as_avx2(["-c", code])
    assert out.returncode == 0, out.stderr
    kernels, isa = (part.strip() for part in out.stdout.split("|"))
    assert kernels == "avx2" and isa.startswith("AVX2") and "no AVX-512" in isa and "VNNI" in isa.split("(")[1]


def test_portable_ort_int8_has_7bit_weights_and_records_checked_classes(tiny_run):
    art = _export(tiny_run, "onnx", "onnx-int8", int8=True, reuse=True)
    m = json.loads((art / "manifest.json").read_text())
    q = m["quantization"]
    assert q["int8_scheme"] == "portable" and 0 < q["max_abs_int8_weight"] <= 64
    checked = m["verification"]["checked_on"]
    assert checked["int8_scheme"] == "portable" and checked["saturation_free"] is True
    here = int8_kernel_class()
    assert checked["build_class"] == here and checked["classes"][here]["checked"]
    if here in VNNI_CLASSES and kernel_paths.avx2_prefix() is not None:
        avx2 = checked["classes"]["avx2"]
        assert avx2["checked"] and avx2["detected_class"] == "avx2" and avx2["passed"]
        assert avx2["max_abs_logit"] <= avx2["tolerance"]


def test_portable_ort_int8_golden_vectors_hold_on_the_avx2_path(tiny_run):
    """The acceptance test: an ORT INT8 artifact exported natively gives its golden logits within
    verify's tolerance on an AVX2-only CPU (on main before the portable scheme, a VNNI-built
    artifact's logits moved by 3.9 there, against a tolerance of 0.25)."""
    _need_harness()
    art = _export(tiny_run, "onnx", "onnx-int8", int8=True, reuse=True)
    out = _as_avx2(["-m", "mxa_edge_cli.app", "verify", str(art), "--json"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["int8_kernels"] == "avx2" and report["isa"].startswith("AVX2")
    assert report["passed"] and report["max_abs_logit"] <= report["tolerance"]
    assert report["decision_agreement"] == 1.0
    if int8_kernel_class() in VNNI_CLASSES:  # built on VNNI: the export checked AVX2 already
        assert report["class_checked_at_export"] is True and report["note"] is None
    native = json.loads(subprocess.run(CLI + ["verify", str(art), "--json"], capture_output=True, text=True).stdout)
    assert native["passed"] and native["int8_kernels"] == int8_kernel_class()


def test_vnni_scheme_is_recorded_at_export_and_refused_by_verify_on_avx2(tiny_run):
    """The old, full-range scheme: exported on a VNNI CPU, its AVX2-path check fails at export
    (recorded, published for VNNI CPUs only) and verify under the harness refuses it, naming
    the scheme and the fix."""
    _need_harness()
    _need_vnni_build_cpu()
    from mxa_edge.support.errors import DriftGateError

    try:
        art = _export(tiny_run, "onnx", "onnx-int8-vnni", int8=True, int8_scheme="vnni", reuse=True)
    except DriftGateError as exc:  # the loose gate refused it natively: the files are kept
        art = exc.result.rejected
    m = json.loads((art / "manifest.json").read_text())
    assert m["quantization"]["int8_scheme"] == "vnni" and m["quantization"]["max_abs_int8_weight"] > 64
    avx2 = m["verification"]["checked_on"]["classes"]["avx2"]
    assert avx2["checked"] and avx2["passed"] is False and avx2["max_abs_logit"] > avx2["tolerance"]
    out = _as_avx2(["-m", "mxa_edge_cli.app", "verify", str(art), "--allow-rejected"])
    assert out.returncode == 8, out.stdout + out.stderr
    assert "FAIL" in out.stdout and "--int8-scheme portable" in out.stderr


def test_export_refuses_a_portable_model_that_moves_on_the_avx2_path(tiny_run, monkeypatch):
    """The refusal path: a PORTABLE export whose AVX2 outputs leave verify's tolerance is not
    published. Made by forcing full-range weights under the PORTABLE label (what a regression
    in the quantizer settings would do)."""
    _need_harness()
    _need_vnni_build_cpu()
    from mxa_edge.support.errors import DriftGateError
    from mxa_edge.torch_side.export import onnx_graph

    real = onnx_graph.quantize_onnx

    def full_range(*args, **kw):
        kw["scheme"] = Int8Scheme.VNNI
        return real(*args, **kw)

    monkeypatch.setattr("mxa_edge.torch_side.export.onnx_backend.quantize_onnx", full_range)
    with pytest.raises(DriftGateError, match="AVX2 kernel path") as info:
        _export(tiny_run, "onnx", "onnx-int8-regressed", int8=True)
    assert not (tiny_run / "exports" / "onnx-int8-regressed").exists()
    drift = json.loads((info.value.result.rejected / "drift.json").read_text())
    assert drift["checked_on"]["classes"]["avx2"]["passed"] is False


def test_portable_openvino_int8_is_identical_on_the_avx2_path(tiny_run):
    """NNCF's overflow fix on every layer: the IR computes the same on oneDNN's AVX2 kernels."""
    _need_harness()
    art = _export(tiny_run, "openvino", "ov-int8", int8=True, reuse=True)
    m = json.loads((art / "manifest.json").read_text())
    assert m["quantization"]["int8_scheme"] == "portable" and m["quantization"]["overflow_fix"] == "enable"
    images = np.load(art / "golden" / "images.npy")
    from mxa_edge.data.arrays import to_model_range
    from mxa_edge.formats import load_artifact

    artifact = load_artifact(art)
    x = to_model_range(images, artifact.preprocess)
    (outputs, seen), why = kernel_paths.run_on_avx2(
        artifact.entry, "openvino", artifact.precision.inference_precision, x, ("logits",)
    )
    assert seen == "avx2", why
    recorded = np.load(art / "golden" / "logits_exported.npy")
    assert np.abs(outputs["logits"] - recorded).max() <= m["verification"]["tolerance"]["max_abs_logit"]
