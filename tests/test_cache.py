"""The preprocessed image cache gives exactly the pixels that decoding gives."""

from __future__ import annotations

import numpy as np

from mxa_edge.data.arrays import load_split_arrays
from mxa_edge.data.cache import open_cached
from mxa_edge.preprocess import Preprocess


def test_cache_matches_decoding_and_is_used_automatically(phantom_root):
    pp = Preprocess(image_size=48)
    decoded = load_split_arrays(phantom_root, "valid", pp, cache=False)
    assert open_cached(decoded.split, pp) is None
    built = load_split_arrays(phantom_root, "valid", pp, cache=True)
    assert isinstance(built.images, np.memmap)
    assert np.array_equal(np.asarray(built.images), decoded.images)
    again = load_split_arrays(phantom_root, "valid", pp, limit=10)  # cache=None: found automatically
    assert isinstance(again.images, np.memmap) and len(again) == 10
    assert np.array_equal(np.asarray(again.images), decoded.images[:10])
    assert np.array_equal(again.targets, decoded.targets[:10])
    # Another resolution is another cache entry.
    assert open_cached(decoded.split, Preprocess(image_size=64)) is None
