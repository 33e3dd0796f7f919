"""Shared fixtures: small real datasets and runs made by the project's own code."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the folder is absent (as outside CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: real images live in ../shared beside the checkout, never in the repo")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Teacher and phantom caches go to a temporary folder, never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MXA_EDGE_CACHE", str(tmp_path_factory.mktemp("mxa-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """200 train / 100 valid phantoms at 128 px (seed 1)."""
    from mxa_edge.data.phantom import generate_phantom_dataset

    return generate_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_train=200, n_valid=100, size=128, seed=1)


def tiny_config(data: Path, out: Path, **overrides):
    from mxa_edge.torch_side.training.config import TrainConfig

    base = dict(
        data=str(data),
        out=str(out),
        model="m0",
        image_size=64,
        epochs=2,
        batch_size=32,
        teacher_epochs=1,
        n_boot=50,
        workers=1,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_run(phantom_root, tmp_path_factory) -> Path:
    """A real (tiny) training run: M0 + MXA + KD from a fine-tuned teacher, 64 px, 2 epochs."""
    from mxa_edge.torch_side.training.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(phantom_root, out))
    return out


@pytest.fixture(scope="session")
def small_onnx_artifact(tmp_path_factory):
    """(run, its FP32 ONNX artifact): ``quick_run(steps=10)`` exported with the default gate. Shared
    read-only by the provenance, DICOM SR, serve and monitor tests: copy it before editing it."""
    pytest.importorskip("torch")
    from mxa_edge.torch_side.export import export_run

    tmp = tmp_path_factory.mktemp("small-onnx")
    run = quick_run(tmp, steps=10)
    return run, export_run(run, "onnx", tmp / "onnx-fp32", n_boot=20).artifact


def quick_run(
    tmp: Path,
    *,
    size: int = 64,
    n_train: int = 160,
    n_valid: int = 100,
    source_size: int = 80,
    steps: int = 30,
    lr: float = 2e-3,
    seed: int = 0,
) -> Path:
    """A run folder from a few hand-rolled AdamW steps on fresh phantoms: faster than the full
    trainer, and enough for export/predict plumbing (AUCs just above chance)."""
    from dataclasses import replace

    import numpy as np
    import torch

    from mxa_edge.data.chexpert import dataset_fingerprint
    from mxa_edge.data.phantom import generate_phantom_dataset
    from mxa_edge.formats import DataSelection, RunRecord
    from mxa_edge.formats.model_spec import ModelSpec
    from mxa_edge.imaging.preprocess import Preprocess
    from mxa_edge.torch_side.models.student import MultiLabelStudent
    from mxa_edge.torch_side.models.weights import save_weights

    root = generate_phantom_dataset(tmp / "data", n_train=n_train, n_valid=n_valid, size=source_size, seed=seed)
    pp = Preprocess(image_size=size)
    selection = DataSelection(root=str(root))  # the default carve: 10% of train.csv's patients tune
    train, tune, valid = (selection.load(split, pp) for split in ("train", "tune", "valid"))
    torch.manual_seed(seed)
    model = MultiLabelStudent(ModelSpec("m0", size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = rng.choice(len(train), 16, replace=False)
        x = torch.from_numpy(train.model_input(idx, pp))
        y = torch.from_numpy(train.targets[idx])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    from mxa_edge.formats import DecisionRule
    from mxa_edge.torch_side.training.loop import predict_logits

    decision = DecisionRule.fit(  # as train does: calibration and thresholds from the tuning split
        predict_logits(model, tune.images, pp.value_range),
        tune.targets,
        tune.mask,
        "youden",
        fitted_on={"split": "tune", "fingerprint": dataset_fingerprint(tune.split), "n_images": len(tune)},
    )
    run = tmp / "run"
    run.mkdir()
    sha = save_weights(model, run / "weights.safetensors")
    RunRecord(
        model=model.spec,
        preprocess=pp,
        data=replace(
            selection,
            fingerprint={
                name: dataset_fingerprint(a.split) for name, a in (("train", train), ("tune", tune), ("valid", valid))
            },
        ),
        weights_sha256=sha,
        decision=decision,
        versions={"torch": torch.__version__},
    ).save(run)
    return run
