"""MXA fusion: "zoom" (the paper's) adds the zoomed ROI position by position; "paste" samples
the refined ROI back into its own box of the full map (``roi_paste``, the crop's inverse).
Both share weights, so one block is built and its ``fusion`` switched."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
from mxa_edge.torch_side.models.mxa import MXABlock, roi_align_resize, roi_paste
from mxa_edge.torch_side.models.student import build_student

WHOLE = [0.0, 0.0, 1.0, 1.0]
LEFT_HALF = [0.0, 0.0, 0.5, 1.0]


def _block_with_box(channels: int, box: list[float], seed: int = 0) -> MXABlock:
    """A zoom block whose ROI predictor outputs ``box`` for any input: zero fc weights and a
    bias that the predictor's own parametrisation (size and offset through sigmoids) maps to
    the box. Sides of 1 and offsets of 0 are the sigmoid's saturation (+-50)."""
    torch.manual_seed(seed)
    block = MXABlock(channels, MXAConfig(min_box_size=0.25)).eval()
    x1, y1, x2, y2 = box

    def size_logit(side):
        return 50.0 if side >= 1.0 else math.log((side - 0.25) / 0.75 / (1 - (side - 0.25) / 0.75))

    def offset_logit(offset, side):
        return -50.0 if offset <= 0.0 else math.log(offset / (1 - side - offset))

    with torch.no_grad():
        block.roi.fc.weight.zero_()
        block.roi.fc.bias.copy_(
            torch.tensor(
                [offset_logit(x1, x2 - x1), offset_logit(y1, y2 - y1), size_logit(x2 - x1), size_logit(y2 - y1)]
            )
        )
    return block


def _paste_copy(block: MXABlock) -> MXABlock:
    other = copy.deepcopy(block)
    other.fusion = "paste"
    return other


def test_the_fixture_predicts_the_boxes_asked_for():
    x = torch.randn(2, 16, 6, 8)
    for box in (WHOLE, LEFT_HALF, [0.25, 0.1, 0.75, 0.6]):
        with torch.no_grad():
            got = _block_with_box(16, box).roi(x)
        assert torch.allclose(got, torch.tensor([box, box]), atol=1e-6), (box, got)


def test_paste_of_the_whole_map_equals_zoom():
    zoom = _block_with_box(16, WHOLE)
    paste = _paste_copy(zoom)
    x = torch.randn(3, 16, 6, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = zoom(x), paste(x)
    assert float(a.abs().max()) > 0.1  # a real output, not two zeros agreeing
    assert float((a - b).abs().max()) < 1e-5


def test_paste_of_the_left_half_fills_the_left_half_only():
    zoom = _block_with_box(16, LEFT_HALF)
    paste = _paste_copy(zoom)
    h, w = 6, 8
    x = torch.randn(2, 16, h, w, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        refined = zoom(x)  # the CBAM-refined ROI in its zoomed (H x W) frame
        out = paste(x)
    assert out.shape == x.shape
    # Right half, away from the box's edge: nothing.
    assert float(out[..., w // 2 + 1 :].abs().max()) == 0.0
    # Left half: the refined ROI resampled to the half's size (H x W/2).
    expected = F.interpolate(refined, size=(h, w // 2), mode="bilinear", align_corners=False)
    assert float((out[..., : w // 2] - expected).abs().max()) < 1e-5
    assert float(expected.abs().max()) > 0.1


def test_roi_paste_places_each_image_in_its_own_box():
    """Batch of 2 with different boxes: each image is pasted as it would be alone."""
    r = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    boxes = torch.tensor([WHOLE, LEFT_HALF])
    out = roi_paste(r, boxes)
    assert torch.allclose(out[0], r[0], atol=1e-6)  # the whole map: identity
    assert torch.allclose(out[1:], roi_paste(r[1:], boxes[1:]), atol=1e-6)
    assert torch.equal(out[1, :, :, 5:], torch.zeros(3, 8, 3))
    half = F.interpolate(r[1:], size=(8, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(out[1:, :, :, :4], half, atol=1e-5)


def test_roi_paste_inverts_the_crop_inside_the_box():
    """Crop-resize then paste of a smooth map (a linear ramp, which bilinear sampling
    reproduces exactly) gives the map back inside the box and zero far outside."""
    h, w = 8, 8
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    f = (2.0 * xs - ys + 1.0).expand(1, 1, h, w)
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]])  # pixels 2..5 on both axes
    back = roi_paste(roi_align_resize(f, box), box)
    assert torch.allclose(back[..., 2:6, 2:6], f[..., 2:6, 2:6], atol=1e-5)
    assert float(back[..., :1, :].abs().max()) == 0.0 and float(back[..., :, 7:].abs().max()) == 0.0


def test_roi_paste_is_differentiable_in_the_box():
    r = torch.randn(1, 2, 8, 8)
    box = torch.tensor([[0.1, 0.2, 0.7, 0.9]], requires_grad=True)
    roi_paste(r, box).sum().backward()
    assert box.grad is not None and bool(torch.all(box.grad.abs() > 0))


def test_paste_gradients_reach_the_roi_predictor():
    torch.manual_seed(0)
    block = MXABlock(32, MXAConfig(fusion="paste"))
    x = torch.randn(4, 32, 7, 7, requires_grad=True)
    block(x).square().mean().backward()
    for name, p in block.roi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached roi.{name}"


def test_paste_student_gradients_reach_every_roi_predictor_and_aux_outputs_keep_their_shapes():
    torch.manual_seed(0)
    model = build_student(ModelSpec("m0", 128, mxa=MXAConfig(fusion="paste")))
    assert all(m.fusion == "paste" for m in model.mxa_blocks) and len(model.mxa_blocks) == 3
    x = torch.randn(2, 1, 128, 128) * 500
    # A real loss: a plain sum of logits has zero gradient through the head's train-mode BatchNorm.
    targets = torch.tensor([[1.0, 0.0] * 7, [0.0, 1.0] * 7])
    F.binary_cross_entropy_with_logits(model(x), targets).backward()
    for i, m in enumerate(model.mxa_blocks):
        g = m.roi.fc.weight.grad
        assert g is not None and g.abs().sum() > 0, f"MXA block {i}: ROI predictor gets no gradient"
    model.eval()
    with torch.no_grad():
        out = model.forward_aux(x)
        assert torch.equal(out["logits"], model(x))
    assert out["roi"].shape == (2, 3, 4) and out["attention_box"].shape == (2, 4)


def test_paste_changes_the_function_zoom_is_the_default():
    assert MXAConfig().fusion == "zoom"
    torch.manual_seed(0)
    zoom = build_student(ModelSpec("m0", 64)).eval()
    paste = build_student(ModelSpec("m0", 64, mxa=MXAConfig(fusion="paste"))).eval()
    paste.load_state_dict(zoom.state_dict())  # same parameters: only the fusion differs
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(4)) * 500
    with torch.no_grad():
        a, b = zoom(x), paste(x)
    # Logits are small at initialisation: the gap is measured against their scale.
    assert float((a - b).abs().max()) > 0.05 * float(a.abs().max()) > 0


def test_export_equivalent_keeps_paste_blocks_and_still_swaps_the_attention():
    from timm.models.efficientvit_msra import LocalWindowAttention

    from mxa_edge.torch_side.export.export_modules import ATTENTION_TOLERANCE, export_equivalent
    from mxa_edge.torch_side.export.prepare import AuxOutputs, fuse_model

    torch.manual_seed(0)
    model = fuse_model(build_student(ModelSpec("m0", 64, mxa=MXAConfig(fusion="paste"))).eval())
    swapped = export_equivalent(model)
    kept = [m for m in swapped.modules() if isinstance(m, MXABlock)]
    assert len(kept) == len(swapped.mxa_blocks) == 3 and all(m.fusion == "paste" for m in kept)
    assert not any(isinstance(m, LocalWindowAttention) for m in swapped.modules())
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5)) * 2048 - 1024
    with torch.no_grad():
        for a, b in zip(AuxOutputs(model)(x), AuxOutputs(swapped)(x)):
            assert float((a - b).abs().max()) <= ATTENTION_TOLERANCE * max(1.0, float(a.abs().max()))


def test_paste_model_exports_to_onnx_and_ort_matches_pytorch(tmp_path):
    """M0/64 with paste, fused and traced by the export's own ONNX step (export-only attention,
    paste blocks as they are): every output in ORT within 1e-4 of torch, at batch 1 and 3."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from mxa_edge.torch_side.export.onnx_graph import export_onnx
    from mxa_edge.torch_side.export.prepare import AuxOutputs, fuse_model

    torch.manual_seed(0)
    model = build_student(ModelSpec("m0", 64, mxa=MXAConfig(fusion="paste"))).eval()
    with torch.no_grad():  # boxes away from the centred start, so the paste's zeros show
        for m in model.mxa_blocks:
            m.roi.fc.bias.copy_(torch.tensor([-1.0, 1.0, -0.5, 0.0]))
    example = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5)) * 2048 - 1024
    fused = fuse_model(model, example)
    names = export_onnx(fused, example, tmp_path / "paste.onnx")
    graph = onnx.load(str(tmp_path / "paste.onnx")).graph
    zero_padded = [
        n
        for n in graph.node
        if n.op_type == "GridSample" and any(a.name == "padding_mode" and a.s == b"zeros" for a in n.attribute)
    ]
    assert len(zero_padded) == 3 and all("/mxa/" in n.name for n in zero_padded)  # one paste per block
    sess = ort.InferenceSession(str(tmp_path / "paste.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(batch)) * 2048 - 1024
        got = dict(zip(names, sess.run(names, {"image": x.numpy()})))
        with torch.no_grad():
            ref = dict(zip(names, (t.numpy() for t in AuxOutputs(fused)(x))))
        assert got["logits"].shape == (batch, 14)
        for name in names:
            assert np.abs(got[name] - ref[name]).max() <= 1e-4 * max(1.0, np.abs(ref[name]).max()), name
