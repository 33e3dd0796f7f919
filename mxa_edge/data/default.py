"""The embedded default dataset: CXR phantoms generated once and cached.

``mxa-edge train`` with no ``--data`` uses it, so the main job runs on a fresh machine with
nothing downloaded. The cache key includes the generator version, so a changed generator
never reuses stale images.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.fileio import atomic_dir
from mxa_edge.paths import cache_dir

DEFAULT_N_TRAIN = 2000
DEFAULT_N_VALID = 500
DEFAULT_SIZE = 256
DEFAULT_SEED = 0
ROOT_NAME = "CheXpert-phantom"


def default_phantom_root(progress=None) -> Path:
    """Path of the default phantom dataset root, generating it on first use."""
    from mxa_edge.data.phantom import PHANTOM_VERSION, generate_phantom_dataset

    folder = (
        cache_dir()
        / f"phantom-v{PHANTOM_VERSION}-n{DEFAULT_N_TRAIN}-{DEFAULT_N_VALID}-s{DEFAULT_SIZE}-seed{DEFAULT_SEED}"
    )
    root = folder / ROOT_NAME
    if (root / "valid.csv").is_file() and (root / "train.csv").is_file():
        return root
    # Generate into a temporary folder and rename: an interrupted generation is never reused.
    with atomic_dir(folder) as tmp:
        generate_phantom_dataset(
            tmp,
            n_train=DEFAULT_N_TRAIN,
            n_valid=DEFAULT_N_VALID,
            size=DEFAULT_SIZE,
            seed=DEFAULT_SEED,
            root_name=ROOT_NAME,
            progress=progress,
        )
    return root
