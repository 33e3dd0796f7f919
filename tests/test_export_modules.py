"""The export-only attention and MXA modules compute what timm's / ours compute (within
ATTENTION_TOLERANCE), and their ONNX graph is smaller and still matches torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
from mxa_edge.torch_side.export.export_modules import (
    ATTENTION_TOLERANCE,
    ExportLocalWindowAttention,
    export_equivalent,
)
from mxa_edge.torch_side.export.prepare import AuxOutputs, fuse_model
from mxa_edge.torch_side.models.mxa import ExportMXABlock, MXABlock
from mxa_edge.torch_side.models.student import build_student


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Weights far from their init (zero attention biases, zero-init BN scales, a centred
    box) so that every path of the module contributes to its output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for b in module.buffers():
            if b.dtype.is_floating_point and b.dim() == 1:  # BN running stats
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


@pytest.mark.parametrize("resolution,window", [(14, 7), (7, 7), (10, 4), (4, 7)])
def test_window_attention_equals_timm(resolution, window):
    """Partitioned (14/7), single window (7/7), padded (10/4: 12x12 padded map), and a map
    smaller than the window (timm shrinks the window to the map)."""
    from timm.models.efficientvit_msra import LocalWindowAttention

    timm_attn = LocalWindowAttention(
        48, 8, num_heads=3, attn_ratio=2, resolution=resolution, window_resolution=window, kernels=(5, 3, 3)
    )
    _randomize(timm_attn, 0)
    timm_attn.eval()
    ours = ExportLocalWindowAttention(timm_attn).eval()
    x = torch.randn(3, 48, resolution, resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = timm_attn(x), ours(x)
    assert got.shape == ref.shape
    assert float((ref - got).abs().max()) < ATTENTION_TOLERANCE
    assert float(ref.abs().max()) > 0.1  # a real output, not two zeros agreeing


def test_mxa_block_equals_training_block():
    block = MXABlock(32, MXAConfig()).eval()
    _randomize(block, 2)
    block.eval()
    ours = ExportMXABlock(block, 7, 7).eval()
    ours.capture = block.capture = True
    x = torch.randn(4, 32, 7, 7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = block(x), ours(x)
    assert float((ref - got).abs().max()) < ATTENTION_TOLERANCE
    assert float((block.last_attention - ours.last_attention).abs().max()) < ATTENTION_TOLERANCE
    assert torch.equal(block.last_box, ours.last_box)
    # Boxes that touch the map's edges exercise the border clamp.
    assert float(block.last_box.min()) < 0.3 or float(block.last_box.max()) > 0.7


@pytest.fixture(scope="module")
def fused_m0():
    model = build_student(ModelSpec("m0", 64, mxa=MXAConfig(placement="block"))).eval()
    _randomize(model, 4)
    model.eval()
    example = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5)) * 2048 - 1024
    return fuse_model(model), example


def test_whole_student_outputs_equal(fused_m0):
    fused, example = fused_m0
    swapped = export_equivalent(fused)
    assert not any(isinstance(m, MXABlock) for m in swapped.modules())
    assert len(swapped.mxa_blocks) == len(fused.mxa_blocks)
    with torch.no_grad():
        ref, got = AuxOutputs(fused)(example), AuxOutputs(swapped)(example)
    for name, a, b in zip(AuxOutputs(fused).output_names, ref, got):
        # Random weights blow the logits up to ~1e3: the bound is relative to the output's scale.
        assert float((a - b).abs().max()) <= ATTENTION_TOLERANCE * max(1.0, float(a.abs().max())), name
    # The original model is untouched (export works on a copy).
    assert any(isinstance(m, MXABlock) for m in fused.modules())


def test_onnx_graph_is_smaller_and_matches_torch(fused_m0, tmp_path):
    import onnx
    import onnxruntime as ort

    from mxa_edge.torch_side.export.onnx_graph import export_onnx

    fused, example = fused_m0
    export_onnx(fused, example, tmp_path / "timm.onnx", equivalent=False)
    export_onnx(fused, example, tmp_path / "equiv.onnx")
    nodes = {k: len(onnx.load(str(tmp_path / f"{k}.onnx")).graph.node) for k in ("timm", "equiv")}
    assert nodes["equiv"] < 0.7 * nodes["timm"], nodes
    graph = onnx.load(str(tmp_path / "equiv.onnx")).graph
    assert not any(n.op_type in ("GridSample", "Shape", "Gather") for n in graph.node)
    sess = ort.InferenceSession(str(tmp_path / "equiv.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch axis stays dynamic
        x = example[:1].repeat(batch, 1, 1, 1)
        got = sess.run(["logits"], {"image": x.numpy()})[0]
        with torch.no_grad():
            ref = fused(x).numpy()
        assert got.shape == (batch, 14)
        assert np.abs(got - ref).max() <= ATTENTION_TOLERANCE * max(1.0, np.abs(ref).max())


def test_int8_keeps_every_mxa_op_in_float(fused_m0, tmp_path):
    """ORT INT8: no op inside an MXA block reads a DequantizeLinear output (box, sampling
    matrices and CBAM gates stay float), while most backbone convs do run in int8."""
    import onnx

    from mxa_edge.torch_side.export.onnx_graph import export_onnx, quantize_onnx

    fused, example = fused_m0
    export_onnx(fused, example, tmp_path / "fp32.onnx")
    calib = np.random.default_rng(0).uniform(-1024, 1024, (8, 1, 64, 64)).astype(np.float32)
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calib, "minmax")
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}

    def reads_dequantized(node):
        return any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)

    mxa = [n for n in graph.node if "/mxa/" in n.name and n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert len({n.name.split("/mxa/")[0] for n in mxa}) == len(fused.mxa_blocks) == 6  # "block" placement
    assert not [n.name for n in mxa if reads_dequantized(n)]
    convs = [n for n in graph.node if n.op_type == "Conv" and "/mxa/" not in n.name]
    assert sum(reads_dequantized(n) for n in convs) > len(convs) // 2
