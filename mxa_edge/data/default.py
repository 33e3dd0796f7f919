"""The embedded default dataset: CXR phantoms generated once and cached.

``mxa-edge train`` with no ``--data`` uses it, so the main job runs on a fresh machine with
nothing downloaded. The cache key includes the generator version, so a changed generator
never reuses stale images.

A second, larger phantom set pretrains the fine-tuned teacher (``--teacher-pretrain-images``):
its own seed and root folder name, so no pretraining image (pixels or path) is one of the
default dataset's training, tuning or held-out images. It has a training split only and is
generated at the run's resolution, not at 256 px, to save time and disk.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.data import phantom
from mxa_edge.support.errors import ConfigError
from mxa_edge.support.fileio import atomic_dir
from mxa_edge.support.paths import cache_dir

DEFAULT_N_TRAIN = 2000
DEFAULT_N_VALID = 500
DEFAULT_SIZE = 256
DEFAULT_SEED = 0
ROOT_NAME = "CheXpert-phantom"

# The teacher's pretraining set: another seed and another root name than the default set's.
PRETRAIN_SEED = 1_000_003
PRETRAIN_ROOT_NAME = "CheXpert-phantom-pretrain"


def _cached_phantoms(folder: Path, root_name: str, progress, **generate) -> Path:
    """``folder/root_name``, generated on first use (atomically: an interrupted generation is never reused)."""

    root = folder / root_name
    if (root / "valid.csv").is_file() and (root / "train.csv").is_file():
        return root
    with atomic_dir(folder) as tmp:
        phantom.generate_phantom_dataset(tmp, root_name=root_name, progress=progress, **generate)
    return root


def default_phantom_root(progress=None) -> Path:
    """Path of the default phantom dataset root, generating it on first use."""

    folder = (
        cache_dir()
        / f"phantom-v{phantom.PHANTOM_VERSION}-n{DEFAULT_N_TRAIN}-{DEFAULT_N_VALID}-s{DEFAULT_SIZE}-seed{DEFAULT_SEED}"
    )
    return _cached_phantoms(
        folder,
        ROOT_NAME,
        progress,
        n_train=DEFAULT_N_TRAIN,
        n_valid=DEFAULT_N_VALID,
        size=DEFAULT_SIZE,
        seed=DEFAULT_SEED,
    )


def pretrain_phantom_root(n: int, size: int, progress=None) -> Path:
    """Root of the teacher's pretraining set: ``n`` phantoms at ``size`` px in train.csv (valid.csv
    is empty), seed ``PRETRAIN_SEED``; generated on first use, then cached.

    About 8 ms an image at 128 px on one core: 20,000 images take ~3 minutes and ~130 MB.
    """

    if n < 1:
        raise ConfigError(f"the teacher's pretraining set needs at least one image, got {n}")
    folder = cache_dir() / f"phantom-pretrain-v{phantom.PHANTOM_VERSION}-n{n}-s{size}-seed{PRETRAIN_SEED}"
    return _cached_phantoms(folder, PRETRAIN_ROOT_NAME, progress, n_train=n, n_valid=0, size=size, seed=PRETRAIN_SEED)
