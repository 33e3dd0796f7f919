"""A CheXpert split decoded into model-ready arrays (numpy only).

Training, evaluation, calibration and the drift gate all read images through this one
function, with the run's own ``Preprocess``, so they see exactly what predict will see.
Images are kept as uint8 at the model's resolution (compact: 2,000 images at 224 px are
100 MB) and scaled to the model's float range batch by batch (``to_model_range``).

A split carved from a CSV (DataSelection's "train" and "tune", both rows of train.csv) is
loaded as rows of the whole CSV's split: the image cache is keyed by the CSV it was built
from (``mxa-edge data cache`` knows CSVs, not carves), so one cache serves both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mxa_edge.data.cache import build_cache, open_cached
from mxa_edge.data.chexpert import ChexpertSplit, Uncertainty, read_split, subset, targets_and_mask
from mxa_edge.data.decode import decode_into, decode_resized
from mxa_edge.imaging.preprocess import Preprocess, scale_to_range

# decode_resized lives in mxa_edge.data.decode; it stays importable from here.
__all__ = ["CachedRows", "SplitArrays", "decode_resized", "load_split_arrays", "to_model_range"]


@dataclass
class SplitArrays:
    split: ChexpertSplit
    images: np.ndarray  # uint8 (N, S, S): centre-cropped, resized, gray in [0, 255]; or CachedRows
    targets: np.ndarray  # float32 (N, 14) in {0, 1}
    mask: np.ndarray  # float32 (N, 14), 0 = excluded from loss and metrics

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int) -> SplitArrays:
        """The first ``n`` rows (``limit``)."""
        return self.take(np.arange(min(max(n, 0), len(self))))

    def take(self, rows) -> SplitArrays:
        """Rows ``rows`` (int indices) of every per-row field."""
        rows = np.asarray(rows, dtype=np.intp)
        return SplitArrays(subset(self.split, rows), self.images[rows], self.targets[rows], self.mask[rows])

    def model_input(self, index, preprocess: Preprocess) -> np.ndarray:
        """float32 (n, 1, S, S) in the model's range for rows ``index``."""
        return to_model_range(self.images[index], preprocess)


class CachedRows:
    """Rows ``rows`` of a memory-mapped image cache, read from it when indexed.

    The training side of a carve is ~90% of train.csv's cache (10 GB for CheXpert at 224 px).
    Copying it out would cost every process that much memory, where the memory map lets the OS
    page cache serve all DDP ranks from one copy; so this stands in for the (N, S, S) array:
    ``len``, ``shape``, indexing by an int, a slice or an index array (the rows asked for are
    read then), and ``np.asarray`` (all rows, copied).
    """

    def __init__(self, cache: np.ndarray, rows: np.ndarray):
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.intp)
        self.shape = (len(self.rows), *cache.shape[1:])
        self.dtype = cache.dtype
        self.ndim = cache.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, tuple):
            return self.cache[(self.rows[index[0]], *index[1:])]
        return self.cache[self.rows[index]]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.cache[self.rows])
        return out if dtype is None else out.astype(dtype, copy=False)


def to_model_range(images_u8: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    return scale_to_range(images_u8.astype(np.float32) / 255.0, preprocess.value_range)[:, None]


def load_split_arrays(
    root,
    split: str | ChexpertSplit,
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
    rows=None,
    name: str | None = None,
) -> SplitArrays:
    """Read a split's CSV and decode its images; ``progress(n_done, n_total)`` if given.

    ``split``: a CSV ('train', 'valid' or a path) read under ``root`` with the view filters, or
    a ``ChexpertSplit`` already read (the filters are not applied again). ``rows``: only these
    rows of it (int indices, order kept), and the result is named ``name``: how a carved split
    loads, with the cache looked up for the whole CSV. ``limit`` keeps the first ``limit`` of
    the rows. ``cache``: None uses the preprocessed image cache when one exists (``mxa-edge
    data cache``), True builds it first when missing (for the whole CSV), False always
    decodes, and then only the rows asked for.
    """
    full = (
        split
        if isinstance(split, ChexpertSplit)
        else read_split(Path(root), split, frontal_only=frontal_only, ap_pa=ap_pa)
    )
    take = _rows_to_take(len(full), rows, limit)
    s = full if take is None else subset(full, take)
    if name is not None:
        s = replace(s, name=name)
    if cache is not False:
        if cache:
            build_cache(full, preprocess, workers=workers, progress=progress)
        cached = open_cached(full, preprocess)
        if cached is not None:
            targets, mask = targets_and_mask(s.raw, uncertainty, blank=blank)
            return SplitArrays(s, _cached_rows(cached, take), targets, mask)
    images = np.empty((len(s), preprocess.image_size, preprocess.image_size), dtype=np.uint8)
    decode_into(s.paths, preprocess, images, workers=workers, progress=progress)
    targets, mask = targets_and_mask(s.raw, uncertainty, blank=blank)
    return SplitArrays(s, images, targets, mask)


def _rows_to_take(n: int, rows, limit: int | None) -> np.ndarray | None:
    """The row indices to load, or None for all ``n``."""
    if rows is None:
        return None if limit is None or limit >= n else np.arange(max(limit, 0))
    take = np.asarray(rows)
    take = np.flatnonzero(take) if take.dtype == bool else take.astype(np.intp, copy=False).reshape(-1)
    return take if limit is None else take[: max(limit, 0)]


def _cached_rows(cached: np.ndarray, take: np.ndarray | None):
    if take is None:
        return cached
    if np.array_equal(take, np.arange(len(take))):  # a head (``limit``): a view of the memory map
        return cached[: len(take)]
    return CachedRows(cached, take)
