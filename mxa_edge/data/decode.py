"""Image files -> uint8 arrays at the model's resolution: the one decode loop.

Both the in-memory split arrays (``arrays.load_split_arrays``) and the on-disk image cache
(``cache.build_cache``) fill their (N, S, S) uint8 array here, so they hold the same pixels.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mxa_edge.imaging.imageio import load_radiograph
from mxa_edge.imaging.preprocess import Preprocess, center_crop_resize

# Bump when decode_resized gives other pixels for the same file (decoder, crop, rounding):
# caches keyed on it (``decoder_identity``) are then rebuilt, never reused.
DECODER_VERSION = 1


def decoder_identity() -> dict:
    """What, besides the file, decides the decoded pixels: this code's version and the image
    libraries'. Part of every cache key over decoded images."""
    from importlib import metadata

    versions = {}
    for dist in ("pillow", "pydicom", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"decoder": DECODER_VERSION, **versions}


def files_state(paths: Sequence[Path]) -> str:
    """sha256 over each file's size and modification time, in order: a re-encoded or replaced
    image changes it without reading any image (a stat per file: about a second for CheXpert)."""
    digest = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            digest.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(b"missing\n")
    return digest.hexdigest()


def decode_resized(path: Path, preprocess: Preprocess) -> np.ndarray:
    """One image file -> uint8 (S, S) at the model's resolution."""
    gray = center_crop_resize(load_radiograph(path), preprocess.image_size, preprocess.interpolation)
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def decode_into(
    paths: Sequence[Path],
    preprocess: Preprocess,
    out: np.ndarray,
    *,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Decode ``paths`` in order into ``out[i]`` (uint8, (N, S, S), e.g. a memmap); returns ``out``.

    ``progress(n_done, n_total)`` is called after each image if given.
    """
    # Decoding releases the GIL in Pillow, so a small thread pool uses both cores.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, img in enumerate(pool.map(lambda p: decode_resized(p, preprocess), paths)):
            out[i] = img
            if progress is not None:
                progress(i + 1, len(paths))
    return out
