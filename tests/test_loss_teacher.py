"""KD adapter (xrv 18 outputs -> 14 labels), safe teacher loading, and the distillation loss."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ArtifactError
from mxa_edge.torch_side.models.teacher import (
    XRV_CHEX_OUTPUTS,
    Teacher,
    adapt_xrv_logits,
    build_xrv_densenet,
    finetune_init,
    load_xrv_state_dict,
)
from mxa_edge.torch_side.training.loss import DistillationLoss


def test_adapter_maps_each_xrv_output_to_its_chexpert_label():
    z = torch.arange(18, dtype=torch.float32)[None] / 10 - 0.9  # distinct logits
    out, mask = adapt_xrv_logits(z)
    for j, name in enumerate(CHEXPERT_LABELS):
        xrv_name = {"Pleural Effusion": "Effusion"}.get(name, name)
        if name == "No Finding":
            continue
        if xrv_name in XRV_CHEX_OUTPUTS:
            assert out[0, j] == z[0, XRV_CHEX_OUTPUTS.index(xrv_name)], name
            assert mask[j] == 1
        else:  # Pleural Other, Support Devices: no teacher -> zero weight
            assert name in ("Pleural Other", "Support Devices")
            assert out[0, j] == 0 and mask[j] == 0
    assert mask.sum() == 12  # 11 mapped + No Finding


def test_no_finding_is_the_product_over_trained_outputs_only():
    z = torch.randn(5, 18)
    untrained = [i for i, n in enumerate(XRV_CHEX_OUTPUTS) if not n]
    z[:, untrained] = 50.0  # untrained outputs must not affect No Finding
    out, _ = adapt_xrv_logits(z)
    trained = [i for i, n in enumerate(XRV_CHEX_OUTPUTS) if n]
    expected = torch.prod(1 - torch.sigmoid(z[:, trained]), dim=1)
    assert torch.allclose(torch.sigmoid(out[:, 0]), expected, atol=1e-6)


def test_teacher_returns_logits_not_probabilities():
    net = build_xrv_densenet(18)
    with torch.no_grad():
        net.classifier.bias.fill_(5.0)  # logits around 5: a sigmoid would squash them below 1
    teacher = Teacher(net, "xrv")
    logits, _ = teacher(torch.zeros(1, 1, 64, 64))
    assert logits[0, CHEXPERT_LABELS.index("Atelectasis")] > 1.0
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training, "a frozen teacher stays in eval mode"


def test_published_xrv_format_loads_without_unpickling_code(tmp_path):
    """xrv publishes whole pickled DenseNet modules; we load them through torch's
    weights_only unpickler with an allowlist of xrv/torch layer classes."""
    net = build_xrv_densenet(18)
    path = tmp_path / "chex-densenet121.pt"
    torch.save(net, path)  # the published files are torch.save(model)
    state = load_xrv_state_dict(path)
    assert torch.equal(state["classifier.weight"], net.classifier.weight)
    sd_path = tmp_path / "state.pt"
    torch.save(net.state_dict(), sd_path)
    assert set(load_xrv_state_dict(sd_path)) == set(state)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_weights_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"classifier.weight": _Evil()}, f)
    with pytest.raises(ArtifactError, match="evil.pt"):
        load_xrv_state_dict(path)


def test_missing_weights_file_says_how_to_fix(tmp_path):
    with pytest.raises(ArtifactError, match="--teacher finetune"):
        load_xrv_state_dict(tmp_path / "absent.pt")


def test_finetune_init_copies_matching_head_rows(tmp_path):
    net = build_xrv_densenet(18)
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    ft = finetune_init(path)
    a = CHEXPERT_LABELS.index("Pleural Effusion")
    assert torch.equal(ft.classifier.weight[a], net.classifier.weight[XRV_CHEX_OUTPUTS.index("Effusion")])
    assert ft.classifier.out_features == 14


def _bce(o, y):
    return -(y * math.log(1 / (1 + math.exp(-o))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-o))))


def test_loss_matches_a_hand_computed_value():
    o = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # one masked (U-ignore) cell
    zt = torch.tensor([[1.0, -2.0, 0.0], [0.0, 1.0, -1.0]])
    kd_mask = torch.tensor([1.0, 1.0, 0.0])  # third label has no teacher
    loss = DistillationLoss(alpha=0.5, temperature=1.0)(o, y, m, zt, kd_mask)

    cells = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    sup = sum(_bce(o[i, j].item(), y[i, j].item()) for i, j in cells) / 5
    pt = torch.sigmoid(zt)
    kd = 0.0
    for j in range(2):
        w = 1 - (pt[0, j] + pt[1, j]).item() / 2
        kd += w * sum(_bce(o[i, j].item(), pt[i, j].item()) for i in range(2)) / 2
    kd /= 3  # 1/C with C = number of labels
    assert loss["loss"].item() == pytest.approx(0.5 * sup + 0.5 * kd, rel=1e-5)
    assert loss["bce"].item() == pytest.approx(sup, rel=1e-5)


def test_masked_cells_and_teacherless_labels_do_not_change_the_loss():
    torch.manual_seed(0)
    o, y, zt = torch.randn(4, 14), torch.randint(0, 2, (4, 14)).float(), torch.randn(4, 14)
    m = torch.ones(4, 14)
    m[:, 3] = 0
    kd_mask = torch.ones(14)
    kd_mask[11] = 0
    fn = DistillationLoss(alpha=0.5)
    a = fn(o, y, m, zt, kd_mask)["loss"]
    y2, zt2 = y.clone(), zt.clone()
    y2[:, 3] = 1 - y2[:, 3]
    zt2[:, 11] += 7
    b = fn(o, y2, m, zt2, kd_mask)["loss"]
    assert torch.allclose(a, b)


def test_alpha_zero_or_no_teacher_is_plain_bce():
    o, y = torch.randn(3, 14), torch.randint(0, 2, (3, 14)).float()
    m = torch.ones(3, 14)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(o, y)
    assert torch.allclose(DistillationLoss(alpha=0.0)(o, y, m, torch.randn(3, 14))["loss"], ref)
    assert torch.allclose(DistillationLoss(alpha=0.5)(o, y, m)["loss"], ref)


def test_uncertainty_policies_reach_the_loss_through_targets_and_mask():
    import numpy as np

    from mxa_edge.data.chexpert import targets_and_mask

    raw = np.array([[-1.0, 1.0, np.nan] + [0.0] * 11], dtype=np.float32)
    t1, m1 = targets_and_mask(raw, "u1")
    t0, m0 = targets_and_mask(raw, "u0")
    ti, mi = targets_and_mask(raw, "ignore")
    assert (t1[0, 0], m1[0, 0]) == (1, 1) and (t0[0, 0], m0[0, 0]) == (0, 1) and mi[0, 0] == 0
    o = torch.zeros(1, 14)
    fn = DistillationLoss(alpha=0.0)
    # Ignoring the uncertain cell averages over the 13 other cells only.
    assert fn(o, torch.from_numpy(ti), torch.from_numpy(mi))["loss"].item() == pytest.approx(math.log(2), rel=1e-6)
