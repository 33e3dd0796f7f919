"""Student initialisation from a local timm EfficientViT checkpoint (train --student-weights)."""

from __future__ import annotations

import pytest
import torch

from mxa_edge.support.errors import ArtifactError

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def timm_m0():
    """timm's own efficientvit_m0 (ImageNet layout: 3 channels, 1000 classes), random weights."""
    torch.manual_seed(3)
    return timm.create_model("efficientvit_m0", pretrained=False).eval()


def _student(variant="m0", size=64, seed=0):
    from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
    from mxa_edge.torch_side.models.student import build_student

    torch.manual_seed(seed)
    return build_student(ModelSpec(variant=variant, image_size=size, mxa=MXAConfig()))


def _save(state, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_loads_with_stem_summed_and_a_new_head(timm_m0, tmp_path, suffix):
    from mxa_edge.support.fileio import sha256_file
    from mxa_edge.torch_side.models.pretrained import load_student_weights

    state = timm_m0.state_dict()
    path = _save(state, tmp_path / f"efficientvit_m0{suffix}")
    student = _student(size=224)  # timm's resolution: every tensor but the stem and head loads as is
    fresh_head = student.backbone.head.linear.weight.detach().clone()
    fresh_roi = student.mxa_blocks[0].roi.fc.weight.detach().clone()
    info = load_student_weights(student, path)
    ours = student.state_dict()

    stem = state["patch_embed.conv1.conv.weight"]
    assert stem.shape[1] == 3 and ours["backbone.patch_embed.conv1.conv.weight"].shape[1] == 1
    torch.testing.assert_close(ours["backbone.patch_embed.conv1.conv.weight"], stem.sum(dim=1, keepdim=True))
    # A block that carries MXA wraps timm's attention: mixer.m -> mixer.attn, same tensor.
    key = "stages.2.blocks.2.mixer.m.attn.qkvs.0.conv.weight"
    torch.testing.assert_close(ours["backbone." + key.replace("mixer.m.", "mixer.attn.")], state[key])
    for k, v in state.items():
        if k.startswith("head.linear") or k == "patch_embed.conv1.conv.weight":
            continue
        target = "backbone." + k if "backbone." + k in ours else "backbone." + k.replace(".mixer.m.", ".mixer.attn.")
        torch.testing.assert_close(ours[target], v, msg=k)
    # The 14-finding head and the MXA blocks keep their fresh initialisation.
    assert ours["backbone.head.linear.weight"].shape == (14, 192)
    torch.testing.assert_close(student.backbone.head.linear.weight, fresh_head)
    torch.testing.assert_close(student.mxa_blocks[0].roi.fc.weight, fresh_roi)

    assert info.loaded == len(state) - 2 and info.ignored == ["head.linear.bias", "head.linear.weight"]
    assert info.adapted == {"backbone.patch_embed.conv1.conv.weight": "RGB stem summed to 1 channel"}
    assert info.new["backbone.head.linear"] == 2
    assert sum(n for m, n in info.new.items() if m.endswith(".mxa")) == sum(1 for k in ours if ".mxa." in k)
    assert len([m for m in info.new if m.endswith(".mxa")]) == 3  # one MXA per stage
    assert info.sha256 == sha256_file(path) and info.timm_model == "efficientvit_m0"
    assert "student initialised from" in info.summary() and "backbone.head.linear (2)" in info.summary()
    # A gray image gives the pretrained stem's response to the same image in all three channels.
    x = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        gray = student.backbone.patch_embed.conv1.conv(x)
        rgb = timm_m0.patch_embed.conv1.conv(x.expand(1, 3, 224, 224))
    torch.testing.assert_close(gray, rgb, rtol=1e-4, atol=1e-4)


def test_smaller_image_size_resizes_attention_biases_like_timm(timm_m0, tmp_path):
    from mxa_edge.torch_side.models.pretrained import load_student_weights

    path = _save(timm_m0.state_dict(), tmp_path / "m0.pth")
    student = _student(size=64)  # stage windows shrink below timm's 7 x 7
    info = load_student_weights(student, path)
    resized = [k for k, how in info.adapted.items() if how.startswith("attention biases")]
    assert resized and all(k.endswith("attention_biases") for k in resized)
    with torch.no_grad():
        assert torch.isfinite(student(torch.zeros(2, 1, 64, 64))).all()


def test_checkpoint_wrappers_and_module_prefix_are_unwrapped(timm_m0, tmp_path):
    from mxa_edge.torch_side.models.pretrained import read_state_dict

    state = timm_m0.state_dict()
    path = _save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 3}, tmp_path / "ck.pth")
    assert set(read_state_dict(path)) == set(state)


def test_bad_files_fail_with_one_line_naming_the_file(timm_m0, tmp_path):
    from mxa_edge.torch_side.models.pretrained import load_student_weights

    student = _student(size=64)
    with pytest.raises(ArtifactError, match=r"nope\.pth: student weights not found"):
        load_student_weights(student, tmp_path / "nope.pth")
    bad = tmp_path / "list.pth"
    torch.save([1, 2, 3], bad)
    with pytest.raises(ArtifactError, match=r"list\.pth: not a state dict"):
        load_student_weights(student, bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_student_weights(student, junk)
    m1 = _save(timm.create_model("efficientvit_m1", pretrained=False).state_dict(), tmp_path / "m1.pth")
    with pytest.raises(ArtifactError, match=r"m1\.pth: .* do not fit efficientvit_m0 .*another variant") as err:
        load_student_weights(student, m1)
    assert "\n" not in str(err.value)
    partial = {k: v for k, v in timm_m0.state_dict().items() if not k.startswith("stages.2")}
    with pytest.raises(ArtifactError, match=r"missing from the file \(e\.g\. stages\.2"):
        load_student_weights(student, _save(partial, tmp_path / "partial.pth"))
