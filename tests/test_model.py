"""Student model and MXA block: shapes, gradients, box validity, placement, aux outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mxa_edge.formats.model_spec import VARIANTS, ModelSpec, MXAConfig
from mxa_edge.labels import NUM_LABELS
from mxa_edge.torch_side.models.mxa import ChannelAttention, MXABlock, RoiPredictor, roi_align_resize
from mxa_edge.torch_side.models.student import build_student


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_builds_with_paper_widths_and_gives_14_logits(variant):
    spec = ModelSpec(variant, 64)
    model = build_student(spec).eval()
    v = VARIANTS[variant]
    assert [s.blocks[-1].mixer.attn.dim for s in model.backbone.stages] == list(v.embed_dim)
    assert [len(s.blocks) for s in model.backbone.stages] == list(v.depth)
    x = torch.randn(3, 1, 64, 64) * 500
    with torch.no_grad():
        out = model.forward_aux(x)
        logits = model(x)
    assert logits.shape == (3, NUM_LABELS)
    assert torch.equal(out["logits"], logits), "aux outputs must not change the logits path"
    assert out["roi"].shape == (3, 3, 4)  # one MXA per stage by default


def test_paper_table_h1():
    assert (
        VARIANTS["m5"].embed_dim == (192, 288, 384)
        and VARIANTS["m5"].depth == (1, 3, 4)
        and VARIANTS["m5"].num_heads == (3, 3, 4)
    )
    assert VARIANTS["m0"].embed_dim == (64, 128, 192) and VARIANTS["m0"].num_heads == (4, 4, 4)


def test_block_placement_puts_mxa_beside_every_attention():
    spec = ModelSpec("m1", 64, mxa=MXAConfig(placement="block"))
    model = build_student(spec)
    assert len(model.mxa_blocks) == sum(VARIANTS["m1"].depth)
    assert len(build_student(ModelSpec("m1", 64, mxa=None)).mxa_blocks) == 0


def test_parallel_sum_runs_attention_once_and_adds_mxa():
    model = build_student(ModelSpec("m0", 64)).eval()
    block = model.backbone.stages[0].blocks[-1].mixer
    calls = []
    block.attn.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        y = block(x)
        expected = x + block.attn(x) + block.mxa(x)
    assert len(calls) == 2  # once in block(x), once in the check
    assert torch.allclose(y, expected, atol=1e-6)


def test_mxa_block_output_shape_and_gradients_reach_roi_predictor():
    torch.manual_seed(0)
    mxa = MXABlock(32)
    x = torch.randn(4, 32, 7, 7, requires_grad=True)
    out = mxa(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in mxa.roi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached roi.{name}"


def test_student_gradients_reach_every_roi_predictor_at_initialisation():
    # 128 px: the last stage's map is 2x2. (At 64 px it is 1x1, where any crop of the
    # map is the same single pixel and the box rightly gets no gradient.)
    torch.manual_seed(0)
    model = build_student(ModelSpec("m0", 128))
    # A real loss: a plain sum of logits has zero gradient through the head's train-mode
    # BatchNorm (the batch mean is subtracted), leaving only rounding noise to test.
    targets = torch.tensor([[1.0, 0.0] * 7, [0.0, 1.0] * 7] * 2)
    F.binary_cross_entropy_with_logits(model(torch.randn(4, 1, 128, 128) * 500), targets).backward()
    for i, m in enumerate(model.mxa_blocks):
        g = m.roi.fc.weight.grad
        assert g is not None and g.abs().sum() > 0, f"MXA block {i}: ROI predictor gets no gradient"


@pytest.mark.parametrize("scale", [0.0, 1.0, 100.0, 1e4])
def test_boxes_are_always_valid(scale):
    torch.manual_seed(1)
    roi = RoiPredictor(16, min_size=0.25)
    with torch.no_grad():
        roi.fc.weight.normal_(0, scale)
        roi.fc.bias.normal_(0, scale)
        boxes = roi(torch.randn(64, 16, 5, 5) * 10)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert torch.all(x1 >= 0) and torch.all(y1 >= 0) and torch.all(x2 <= 1 + 1e-6) and torch.all(y2 <= 1 + 1e-6)
    assert torch.all(x2 - x1 >= 0.25 - 1e-6) and torch.all(y2 - y1 >= 0.25 - 1e-6)


def test_roi_resize_of_the_full_box_is_the_identity():
    x = torch.randn(2, 3, 6, 8)
    y = roi_align_resize(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert torch.allclose(y, x, atol=1e-5)


def test_roi_resize_matches_crop_then_bilinear_resize():
    x = torch.randn(1, 2, 8, 8)
    box = torch.tensor([[0.25, 0.5, 0.75, 1.0]])  # pixels 2..6 x 4..8
    y = roi_align_resize(x, box)
    ref = F.interpolate(x[:, :, 4:8, 2:6], size=(8, 8), mode="bilinear", align_corners=False)
    # Interior samples agree; at the crop's outer half-pixel RoIAlign-style sampling reads the
    # continuous map just outside the crop where interpolate clamps to the crop's edge.
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)


def test_roi_resize_is_differentiable_in_the_box():
    x = torch.randn(1, 2, 8, 8)
    box = torch.tensor([[0.1, 0.2, 0.7, 0.9]], requires_grad=True)
    roi_align_resize(x, box).sum().backward()
    assert box.grad is not None and box.grad.abs().sum() > 0


def test_channel_attention_is_appendix_d():
    torch.manual_seed(0)
    ca = ChannelAttention(16, reduction=4)
    x = torch.randn(2, 16, 5, 5)
    w1, w2 = ca.fc1.weight[:, :, 0, 0], ca.fc2.weight[:, :, 0, 0]
    mlp = lambda v: torch.relu(v @ w1.T) @ w2.T  # noqa: E731
    m_c = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    assert torch.allclose(ca(x), x * m_c[:, :, None, None], atol=1e-6)


def test_spec_round_trips_and_rejects_bad_values():
    from mxa_edge.support.errors import ConfigError

    spec = ModelSpec("m3", 224, mxa=MXAConfig(placement="block"))
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec.from_dict(ModelSpec("m0", 128, mxa=None).to_dict()).mxa is None
    with pytest.raises(ConfigError, match="m9"):
        ModelSpec("m9", 224)
    with pytest.raises(ConfigError, match="multiple of 16"):
        ModelSpec("m0", 100)


def test_mxa_fusion_is_stored_old_manifests_read_as_zoom_and_zoom_names_are_unchanged():
    from mxa_edge.support.errors import ConfigError

    paste = ModelSpec("m0", 128, mxa=MXAConfig(fusion="paste"))
    assert ModelSpec.from_dict(paste.to_dict()) == paste and paste.to_dict()["mxa"]["fusion"] == "paste"
    old = ModelSpec("m0", 128).to_dict()
    del old["mxa"]["fusion"]  # a manifest written before the option existed
    assert ModelSpec.from_dict(old).mxa.fusion == "zoom"
    assert ModelSpec("m0", 128).name == "efficientvit-multilabel-m0-mxa-128"
    assert paste.name == "efficientvit-multilabel-m0-mxa-paste-128"
    assert ModelSpec("m0", 128, mxa=None).name == "efficientvit-multilabel-m0-128"
    with pytest.raises(ConfigError, match="fusion"):
        ModelSpec("m0", 128, mxa=MXAConfig(fusion="blend"))
