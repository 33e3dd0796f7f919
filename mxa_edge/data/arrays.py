"""A CheXpert split decoded into model-ready arrays (numpy only).

Training, evaluation, calibration and the drift gate all read images through this one
function, with the run's own ``Preprocess``, so they see exactly what predict will see.
Images are kept as uint8 at the model's resolution (compact: 2,000 images at 224 px are
100 MB) and scaled to the model's float range batch by batch (``to_model_range``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mxa_edge.data.cache import build_cache, open_cached
from mxa_edge.data.chexpert import ChexpertSplit, Uncertainty, read_split, targets_and_mask
from mxa_edge.data.decode import decode_into, decode_resized
from mxa_edge.preprocess import Preprocess, scale_to_range

# decode_resized lives in mxa_edge.data.decode; it stays importable from here.
__all__ = ["SplitArrays", "decode_resized", "load_split_arrays", "to_model_range"]


@dataclass
class SplitArrays:
    split: ChexpertSplit
    images: np.ndarray  # uint8 (N, S, S): centre-cropped, resized, gray in [0, 255]
    targets: np.ndarray  # float32 (N, 14) in {0, 1}
    mask: np.ndarray  # float32 (N, 14), 0 = excluded from loss and metrics

    def __len__(self) -> int:
        return len(self.images)

    def model_input(self, index, preprocess: Preprocess) -> np.ndarray:
        """float32 (n, 1, S, S) in the model's range for rows ``index``."""
        return to_model_range(self.images[index], preprocess)


def _head(s: ChexpertSplit, limit: int) -> ChexpertSplit:
    return ChexpertSplit(
        root=s.root,
        name=s.name,
        paths=s.paths[:limit],
        raw=s.raw[:limit],
        views=s.views[:limit],
        ap_pa=s.ap_pa[:limit],
        rel_paths=s.rel_paths[:limit],
    )


def to_model_range(images_u8: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    return scale_to_range(images_u8.astype(np.float32) / 255.0, preprocess.value_range)[:, None]


def load_split_arrays(
    root,
    split: str,
    preprocess: Preprocess,
    *,
    uncertainty: Uncertainty | str = Uncertainty.U1,
    blank: str = "negative",
    frontal_only: bool = True,
    ap_pa: str | None = None,
    limit: int | None = None,
    progress=None,
    workers: int = 2,
    cache: bool | None = None,
) -> SplitArrays:
    """Read a split's CSV and decode its images; ``progress(n_done, n_total)`` if given.

    ``cache``: None uses the preprocessed image cache when one exists (``mxa-edge data
    cache``), True builds it first when missing, False always decodes.
    """
    s = read_split(Path(root), split, frontal_only=frontal_only, ap_pa=ap_pa)
    if cache is not False:
        if cache:
            build_cache(s, preprocess, workers=workers, progress=progress)
        cached = open_cached(s, preprocess)
        if cached is not None:
            rows = slice(0, limit) if limit is not None else slice(None)
            s = _head(s, limit) if limit is not None and limit < len(s) else s
            targets, mask = targets_and_mask(s.raw, uncertainty, blank=blank)
            return SplitArrays(s, cached[rows], targets, mask)
    if limit is not None and limit < len(s):
        s = _head(s, limit)
    images = np.empty((len(s), preprocess.image_size, preprocess.image_size), dtype=np.uint8)
    decode_into(s.paths, preprocess, images, workers=workers, progress=progress)
    targets, mask = targets_and_mask(s.raw, uncertainty, blank=blank)
    return SplitArrays(s, images, targets, mask)
