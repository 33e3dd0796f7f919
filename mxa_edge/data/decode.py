"""Image files -> uint8 arrays at the model's resolution: the one decode loop.

Both the in-memory split arrays (``arrays.load_split_arrays``) and the on-disk image cache
(``cache.build_cache``) fill their (N, S, S) uint8 array here, so they hold the same pixels.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mxa_edge.imageio import load_radiograph
from mxa_edge.preprocess import Preprocess, center_crop_resize


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
