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
    from mxa_edge.training.config import TrainConfig

    base = dict(
        data=str(data), out=str(out), model="m0", image_size=64, epochs=2, batch_size=32, teacher_epochs=1,
        n_boot=50, workers=1,
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_run(phantom_root, tmp_path_factory) -> Path:
    """A real (tiny) training run: M0 + MXA + KD from a fine-tuned teacher, 64 px, 2 epochs."""
    from mxa_edge.training.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(phantom_root, out))
    return out
