"""The preprocessed image cache gives exactly the pixels that decoding gives."""

from __future__ import annotations

import numpy as np

from mxa_edge.data.arrays import load_split_arrays
from mxa_edge.data.cache import open_cached
from mxa_edge.imaging.preprocess import Preprocess


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


def test_changing_one_image_invalidates_the_cache(phantom_root, tmp_path):
    """Same paths and labels, other bytes in one image: the cache is not reused."""
    import os
    import shutil

    from PIL import Image

    root = tmp_path / "data"
    shutil.copytree(phantom_root.parent, root)
    root = root / phantom_root.name
    pp = Preprocess(image_size=48)
    first = load_split_arrays(root, "valid", pp, cache=True)
    path = first.split.paths[0]
    st = os.stat(path)
    img = np.asarray(Image.open(path).convert("L"))
    Image.fromarray(255 - img).save(path, quality=92)  # re-encoded, inverted: other pixels
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert open_cached(first.split, pp) is None  # the old entry is not served
    again = load_split_arrays(root, "valid", pp, cache=True)
    assert not np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))
    assert np.array_equal(np.asarray(again.images[1:]), np.asarray(first.images[1:]))
