"""Accuracy control: a PTQ INT8 export that fails the gate is re-quantized with its most
sensitive layers back in float, bounded, scored on the TUNING split (real ONNX Runtime and
OpenVINO quantization; the gate is made strict so the first model fails)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from test_export import LOOSE_DECISIONS, _export, tiny_run  # noqa: E402,F401

from mxa_edge.decision.gate import GateSpec  # noqa: E402
from mxa_edge.support.errors import DriftGateError  # noqa: E402
from mxa_edge.torch_side.export.accuracy_control import FIRST_STEP, MAX_FLOAT_SHARE, MAX_ITERATIONS  # noqa: E402

# No AUC may drop at all: the first INT8 model of the tiny run fails it somewhere, so the retry
# runs; whether a candidate then passes on the tuning split (and the held-out gate) varies.
STRICT = GateSpec(0.0, 0.0, **LOOSE_DECISIONS)


def _export_strict(tiny_run, target, name):
    try:
        folder = _export(tiny_run, target, name, int8=True, gate=STRICT).artifact
    except DriftGateError as exc:
        folder = exc.result.rejected
    return folder, json.loads((folder / "manifest.json").read_text())


def _check_record(ac, n_tune, mixed=None):
    assert ac["split"] == "tune" and ac["n_images"] == n_tune and ac["max_iterations"] == MAX_ITERATIONS
    assert ac["max_float_share"] == MAX_FLOAT_SHARE
    added = [h["float_layers_added"] for h in ac["history"]]
    assert added[0] == 0 and added[1] == FIRST_STEP and added == sorted(added) and len(set(added)) == len(added)
    assert 2 <= len(ac["history"]) <= MAX_ITERATIONS + 1
    scores = [h["tune_gate_score"] for h in ac["history"]]
    # It stops at the first candidate that passes on the tuning split, after MAX_ITERATIONS, or when
    # half the quantizable layers are float: never an "INT8" model that is float throughout.
    assert all(s < 0 for s in scores[:-1])
    bound = None
    if mixed and mixed.get("n_quantizable"):
        bound = int(MAX_FLOAT_SHARE * mixed["n_quantizable"]) - len(mixed.get("float_layers") or [])
        assert added[-1] <= bound
    assert scores[-1] >= 0 or len(scores) == MAX_ITERATIONS + 1 or added[-1] == bound
    assert len(ac["reverted_to_float"]) == added[-1]
    assert ac["first_gate"]["passed"] is False and ac["first_gate"]["split"] == "valid"


def test_onnx_accuracy_control_returns_sensitive_layers_to_float(tiny_run):
    from mxa_edge.formats import RunRecord
    from mxa_edge.torch_side.export.sensitivity import float_node_names

    folder, m = _export_strict(tiny_run, "onnx", "onnx-int8-ac")
    ac = m["quantization"]["accuracy_control"]
    n_tune = len(RunRecord.load(tiny_run).data.read("tune").paths)
    _check_record(ac, n_tune, m["quantization"]["mixed_precision"])
    # The reverted layers really run in float: their weights are not dequantized int8.
    graph = onnx.load(str(folder / "model.int8.onnx")).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    reverted = set(float_node_names(folder / "model.int8.onnx", ac["reverted_to_float"]))
    assert reverted
    for node in graph.node:
        if node.name in reverted:
            assert producers.get(node.input[1]) != "DequantizeLinear", node.name
    # The order is the label-free sensitivity ranking, made before any gate ran: the first layer
    # returned to float is the most sensitive one the analysis had left in INT8.
    mixed = m["quantization"]["mixed_precision"]
    still_int8 = [name for name in mixed["most_sensitive"] if name not in mixed["float_layers"]]
    assert ac["reverted_to_float"][: len(still_int8)] == still_int8[: len(ac["reverted_to_float"])]


def test_openvino_accuracy_control_is_bounded_and_recorded(tiny_run):
    from mxa_edge.formats import RunRecord

    _, m = _export_strict(tiny_run, "openvino", "ov-int8-ac")
    ac = m["quantization"]["accuracy_control"]
    _check_record(ac, len(RunRecord.load(tiny_run).data.read("tune").paths), m["quantization"].get("mixed_precision"))
    assert ac["reverted_ops"] and m["quantization"]["int8_scheme"] == "portable"
    assert m["quantization"]["grid_inputs_in_float"]  # the MXA blocks stay float after the retry
