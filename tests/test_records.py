"""The manifest's typed sections (formats/records.py) write exactly the JSON they read: same keys,
same order, absent keys stay absent; older manifests without them still load (torch-free, fast)."""

from __future__ import annotations

import json

from mxa_edge.formats import ArtifactManifest
from mxa_edge.formats.records import ExportSettings, QuantizationRecord

MIXED = {
    "method": "fake-quant sensitivity on the calibration images (label-free)",
    "budget": 0.05,
    "noise_all_int8": 0.0812,
    "noise_mixed": 0.0431,
    "n_quantizable": 40,
    "float_layers": ["backbone.head"],
    "most_sensitive": {"backbone.head": 0.04, "backbone.stem": 0.01},
    "simulated_max_abs_int8_weight": 64,
}
ORT_PTQ = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "method": "minmax",
    "per_channel": True,
    "weights": "int8 symmetric, 7-bit range (reduce_range)",
    "int8_scheme": "portable",
    "max_abs_int8_weight": 64,
    "activations": "uint8 asymmetric",
    "op_types": ["Conv", "Gemm", "MatMul"],
    "activation_matmuls": "float (attention products; see activation_matmuls)",
    "float_bypass_inputs": 12,
    "excluded_nodes": ["/backbone/head/Gemm"],
    "n_calibration": 24,
    "accuracy_control": {
        "tool": "mxa-edge accuracy control",
        "metric": "gate v2 score",
        "split": "tune",
        "n_images": 40,
        "gate": {"max_drop": 0.03, "max_macro_drop": 0.01},
        "max_iterations": 6,
        "history": [
            {"float_layers_added": 0, "tune_gate_score": -0.5},
            {"float_layers_added": 2, "tune_gate_score": 0.1},
        ],
        "reverted_to_float": ["a", "b"],
        "first_gate": {"passed": False, "split": "valid"},
    },
    "mixed_precision": MIXED,
}
# Another tool's keys, in its own order (OpenVINO PTQ), and the QAT exports'.
NNCF_PTQ = {
    "tool": "nncf.quantize 2.x",
    "method": "minmax",
    "per_channel": True,
    "preset": "mixed (symmetric weights, asymmetric activations)",
    "int8_scheme": "portable",
    "overflow_fix": "enable",
    "model_type": "transformer",
    "ignored_patterns": [".*/mxa/.*"],
    "ignored_types": ["Softmax"],
    "float_nodes": [],
    "n_calibration": 24,
    "grid_inputs_in_float": ["/backbone/mxa"],
    "mixed_precision": {"method": "skipped", "reason": "too few images", "float_layers": []},
}
ORT_QAT = {
    "tool": "nncf QAT, exported as ONNX QuantizeLinear/DequantizeLinear",
    "format": "QDQ",
    "n_quantizers": 30,
    "int8_weight_initializers": 20,
    "max_abs_int8_weight": 64,
    "export_vs_torch_max_abs": 0.001,
}
QAT = {
    "tool": "nncf.quantize (torch) 2.x + fine-tuning",
    "epochs": 1,
    "lr": 1e-5,
    "batch_size": 32,
    "steps_per_epoch": 3,
    "n_train": 100,
    "optimizer": "AdamW (weight decay 0)",
    "loss": "BCE(logits, FP32 probabilities)",
    "losses": [{"epoch": 1, "loss": 0.12}],
    "model_type": "transformer",
    "preset": "mixed (symmetric weights, asymmetric activations)",
    "int8_scheme": "portable",
    "seven_bit_weight_quantizers": 20,
    "bias_correction": False,
    "smooth_quant": False,
    "ignored_patterns": [".*/mxa/.*"],
    "ignored_types": ["Softmax"],
    "n_calibration": 24,
    "mixed_precision": MIXED,
}
TRT_EXPORT = {
    "target": "tensorrt",
    "onnx_opset": 17,
    "onnx_parity_max_abs": 1e-6,
    "trtexec": "trtexec --onnx=model.qdq.onnx --saveEngine=model.engine --int8",
    "build_file": "BUILD_TRT.txt",
    "engine_built": True,
    "engine_missing_reason": None,  # written as null when the engine was built
    "gated_with": "TensorRT engine",
}


def _manifest(**sections) -> dict:
    m = {
        "format": "mxa-edge-artifact",
        "format_version": 5,
        "model_id": "m0-onnx-int8",
        "backend": "onnxruntime",
        "entry": "model.int8.onnx",
        "files": {"model.int8.onnx": "0" * 64},
        "inputs": ["image"],
        "outputs": ["logits"],
        "labels": [],
        "decision": None,
        "guard": None,
        "preprocess": {"image_size": 64},
        "precision": {"weights": "int8", "activations": "uint8", "inference_precision": "int8"},
        "quantization": None,
        "qat": None,
        "calibration": None,
        "source_run": {},
        "model": {"variant": "m0", "image_size": 64},
        "flops": 1,
        "macs": 1,
        "params": 1,
        "drift": {"passed": True},
        "export": {"target": "onnx", "onnx_opset": 17, "onnx_parity_max_abs": 1e-6},
        "verification": None,
        "versions": {},
        "created": "2025-01-01T00:00:00+00:00",
    }
    m.update(sections)
    return m


def _same_layout(a, b) -> bool:
    """Equal, with every object's keys in the same order (json.dumps keeps the order)."""
    return json.dumps(a) == json.dumps(b)


def test_sections_round_trip_unchanged():
    calibration = {"source": "run train split", "n": 24, "fingerprint": "0123456789abcdef"}
    cases = [
        {"quantization": ORT_PTQ, "calibration": calibration},
        {"quantization": NNCF_PTQ, "calibration": calibration, "export": {"target": "openvino", "static_batch": 2}},
        {"quantization": ORT_QAT, "qat": QAT, "calibration": calibration},
        {"quantization": ORT_PTQ, "backend": "tensorrt", "export": TRT_EXPORT},
    ]
    for sections in cases:
        raw = _manifest(**sections)
        manifest = ArtifactManifest.from_dict(raw)
        for name in ("quantization", "qat", "calibration"):
            assert (getattr(manifest, name) is None) == (raw[name] is None)
        for key in ("labels", "decision", "guard", "preprocess", "source_run", "model", "verification"):
            raw.pop(key)  # sections other records own (their own tests): only ours are compared
        out = manifest.to_dict()
        assert _same_layout({k: out[k] for k in raw}, raw), sections


def test_sections_are_typed():
    m = ArtifactManifest.from_dict(_manifest(quantization=ORT_PTQ, qat=QAT, export=TRT_EXPORT))
    ac = m.quantization.accuracy_control
    assert ac.split == "tune" and ac.history[1].tune_gate_score == 0.1 and ac.reverted_ops is None
    assert m.quantization.mixed_precision.float_layers == ["backbone.head"]
    assert m.qat.losses[0].loss == 0.12 and m.qat.mixed_precision.budget == 0.05
    assert m.export.gated_with == "TensorRT engine" and m.export.engine_missing_reason is None
    assert m.target == "tensorrt" and m.static_batch is None
    # Read as the dicts they were: section[key] is the JSON value.
    assert m.quantization["accuracy_control"]["history"][0] == {"float_layers_added": 0, "tune_gate_score": -0.5}
    # A key another target writes as null is absent for the others.
    assert "engine_missing_reason" not in ExportSettings(target="onnx", onnx_opset=17).to_dict()


def test_a_targets_own_keys_are_kept_in_place():
    """BackendOutput.quantization / ExportOptions.notes are a target's own: unknown keys survive."""
    q = {"tool": "toy", "block_size": 32, "n_calibration": 8}
    assert QuantizationRecord.from_dict(q).extra == {"block_size": 32}
    assert _same_layout(
        QuantizationRecord.from_dict(q).to_dict(), {"tool": "toy", "n_calibration": 8, "block_size": 32}
    )
    export = {"target": "toy", "onnx_opset": 17, "output_names": ["logits"], "static_batch": 4}
    assert _same_layout(ExportSettings.from_dict(export).to_dict(), export)


def test_an_old_manifest_without_the_sections_loads():
    old = _manifest()
    for key in ("quantization", "qat", "calibration", "export"):
        old.pop(key)
    m = ArtifactManifest.from_dict(old)
    assert m.quantization is None and m.qat is None and m.calibration is None
    assert m.target == "onnxruntime" and m.static_batch is None  # the target falls back to the backend
    assert m.to_dict()["export"] == {"target": "onnxruntime"}
    # Sections with keys this version does not know, or without some it writes, load too.
    partial = _manifest(
        quantization={"accuracy_control": {"tool": "nncf.quantize_with_accuracy_control", "n_images": 20}},
        calibration={"n": 10, "retired_key": 1},
        qat={"epochs": 2},
    )
    m = ArtifactManifest.from_dict(partial)
    assert m.quantization.accuracy_control.n_images == 20 and m.quantization.accuracy_control.split is None
    assert m.calibration.n == 10 and m.calibration.fingerprint is None and m.qat.epochs == 2
    assert m.to_dict()["quantization"] == partial["quantization"]
