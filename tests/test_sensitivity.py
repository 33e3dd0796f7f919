"""Mixed precision: the label-free layer sensitivity analysis, its mapping onto ONNX node
names, ORT's float bypass, and the gate score NNCF accuracy control optimises."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from mxa_edge.formats.model_spec import ModelSpec  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def tiny_model_and_images():
    from mxa_edge.torch_side.export.prepare import fuse_model
    from mxa_edge.torch_side.models.student import build_student

    torch.manual_seed(0)
    gen = np.random.default_rng(0)
    # Smooth random "radiographs" in the model's input range so logits vary between images.
    base = gen.normal(size=(32, 1, 8, 8)).astype(np.float32)
    images = np.kron(base, np.ones((1, 1, SIZE // 8, SIZE // 8), np.float32)) * 300.0
    # Fused as the export pipeline analyses it (Conv+BN folded, the head a plain Linear).
    model = fuse_model(build_student(ModelSpec("m0", SIZE)).eval(), torch.from_numpy(images[:2]))
    return model, images


def test_choose_float_layers_meets_budget_and_restores_weights(tiny_model_and_images):
    from mxa_edge.torch_side.export.sensitivity import choose_float_layers

    model, images = tiny_model_and_images
    x = torch.from_numpy(images[:4])
    with torch.no_grad():
        before = model(x).clone()
    loose = choose_float_layers(model, images, budget=1e9)
    assert loose.layers == [] and loose.noise_int8 > 0  # INT8 is never exact
    tight_budget = loose.noise_int8 / 3
    tight = choose_float_layers(model, images, budget=tight_budget)
    assert tight.layers, "a third of the all-INT8 noise needs some layers in float"
    assert tight.noise_mixed <= tight_budget
    # The float layers are the head of the sensitivity ranking, most sensitive first.
    ranked = sorted(tight.sensitivity, key=lambda n: -tight.sensitivity[n])
    assert tight.layers == ranked[: len(tight.layers)]
    assert all(".mxa.roi." not in name for name in tight.sensitivity)  # always float anyway
    with torch.no_grad():
        assert torch.equal(model(x), before)  # fake quantization left no trace


def test_sensitivity_skips_uniform_calibration(tiny_model_and_images):
    from mxa_edge.torch_side.export.sensitivity import choose_float_layers

    model, images = tiny_model_and_images
    black = np.full_like(images[:16], -1024.0)
    res = choose_float_layers(model, black, budget=0.08)
    assert res.layers == [] and "do not vary" in res.skipped
    assert choose_float_layers(model, images[:3]).skipped.startswith("3 calibration images")


def test_float_node_names_cover_every_layer(tiny_model_and_images, tmp_path):
    from mxa_edge.torch_side.export.onnx_graph import export_onnx
    from mxa_edge.torch_side.export.sensitivity import QUANTIZED_OP_TYPES, float_node_names, node_scope

    model, images = tiny_model_and_images
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.from_numpy(images[:2]), path)
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    nodes = float_node_names(path, layers)
    assert {node_scope(n).rsplit("_", 1)[0] if node_scope(n) not in layers else node_scope(n) for n in nodes} == set(
        layers
    )
    graph = onnx.load(str(path)).graph
    assert len(nodes) == sum(n.op_type in ("Conv", "Gemm") for n in graph.node)
    assert set(QUANTIZED_OP_TYPES) >= {n.op_type for n in graph.node if n.name in nodes}
    assert float_node_names(path, ["backbone.head"]) == ["/backbone/head/Gemm"]
    # The export-only CBAM (export/export_modules.py) runs its channel MLP once, on the avg- and
    # max-pooled vectors together: one node per layer.
    fc1 = [n for n in layers if n.endswith("mxa.channel.fc1")][0]
    assert len(float_node_names(path, [fc1])) == 1


def test_float_bypass_keeps_residual_adds_in_float(tiny_model_and_images, tmp_path):
    from mxa_edge.torch_side.export.onnx_graph import export_onnx, quantize_onnx
    from mxa_edge.torch_side.export.sensitivity import QUANTIZED_OP_TYPES

    model, images = tiny_model_and_images
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    export_onnx(model, torch.from_numpy(images[:2]), src)
    settings = quantize_onnx(src, dst, images[:16], "minmax", float_layers=["backbone.head"])
    assert settings["float_bypass_inputs"] > 0
    assert "/backbone/head/Gemm" in settings["excluded_nodes"]
    graph = onnx.load(str(dst)).graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type in QUANTIZED_OP_TYPES or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            src_node = producer.get(name)
            if src_node is None or src_node.op_type != "DequantizeLinear" or src_node.input[0] in inits:
                continue
            q = producer[src_node.input[0]]
            if q.op_type == "QuantizeLinear":
                # Allowed only for an int8 op's own output (keeps ORT's QLinearConv fusion).
                origin = producer.get(q.input[0])
                assert origin is not None and origin.op_type in QUANTIZED_OP_TYPES, (
                    f"{node.name} ({node.op_type}) reads a quantized copy of {q.input[0]}"
                )
    head = [n for n in graph.node if n.name == "/backbone/head/Gemm"][0]
    assert head.input[1] in inits  # float weights straight from the initializer, no DequantizeLinear


def test_gate_score_matches_the_gate():
    pytest.importorskip("openvino")
    from mxa_edge.decision.drift import gate
    from mxa_edge.decision.gate import GateSpec
    from mxa_edge.decision.gate import gate_score as make_score

    def gate_score(y, mask, ref, max_macro_drop, max_drop):
        return make_score(y, mask, ref, GateSpec(max_macro_drop, max_drop))

    rng = np.random.default_rng(0)
    y = (rng.random((400, 14)) < 0.3).astype(np.float32)
    mask = np.ones_like(y)
    ref = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, y.shape), 0.01, 0.99)
    score = gate_score(y, mask, ref, 0.005, 0.02)
    assert score(ref) == pytest.approx(1.0)
    worse = ref.copy()
    worse[:, 1] = np.clip(worse[:, 1] + rng.normal(0, 0.3, 400), 0.01, 0.99)
    s = score(worse)
    report = gate(y, mask, ref, worse, spec=GateSpec(0.005, 0.02), n_boot=0)
    assert (s >= 0) == report.passed
    assert s < 0  # this much noise on one finding fails
