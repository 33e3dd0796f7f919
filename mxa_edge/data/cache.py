"""One-time preprocessed image cache: decoded, centre-cropped, resized uint8, memory-mapped.

Decoding a 320x390 CheXpert JPEG and resizing it costs milliseconds of CPU per image, which
starves a GPU at batch 512. ``mxa-edge data cache DATA --size 224`` decodes each split once
into one raw uint8 file (N x S x S, 50 KB per image at 224 px; 11 GB for all of CheXpert)
plus an index; training then memory-maps it, so the OS page cache serves batches at memory
speed and every DDP rank shares the same pages.

The cache key is the split's fingerprint (its image paths and labels), each file's size and
modification time, the decoder's identity (``decode.decoder_identity``: code and library
versions) and the preprocessing (size, crop, interpolation): a changed CSV, a replaced image,
another decoder or resolution never reuses stale pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mxa_edge.data.chexpert import ChexpertSplit, dataset_fingerprint
from mxa_edge.data.decode import decode_into, decoder_identity, files_state
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.support.fileio import atomic_dir
from mxa_edge.support.paths import cache_dir

IMAGES = "images.u8"
INDEX = "index.json"
CACHE_VERSION = 2


def cache_key(split: ChexpertSplit, pp: Preprocess) -> str:
    key = json.dumps(
        {
            "v": CACHE_VERSION,
            "data": dataset_fingerprint(split),
            "files": files_state(split.paths),
            "decoder": decoder_identity(),
            "n": len(split),
            "size": pp.image_size,
            "crop": pp.crop,
            "interpolation": pp.interpolation,
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def cache_folder(split: ChexpertSplit, pp: Preprocess, base: Path | None = None) -> Path:
    return (base or cache_dir() / "images") / f"{split.name}-{pp.image_size}px-{cache_key(split, pp)}"


def open_cached(split: ChexpertSplit, pp: Preprocess, base: Path | None = None) -> np.ndarray | None:
    """The memory-mapped images of ``split`` at ``pp``'s resolution, or None when not cached."""
    folder = cache_folder(split, pp, base)
    index = folder / INDEX
    if not index.is_file():
        return None
    meta = json.loads(index.read_text())
    if meta.get("rel_paths") != split.rel_paths:  # same fingerprint but another row order
        return None
    s = pp.image_size
    return np.memmap(folder / IMAGES, dtype=np.uint8, mode="r", shape=(len(split), s, s))


def build_cache(
    split: ChexpertSplit, pp: Preprocess, *, base: Path | None = None, workers: int = 2, progress=None
) -> Path:
    """Decode every image of ``split`` once into the cache; returns the cache folder."""
    folder = cache_folder(split, pp, base)
    if (folder / INDEX).is_file():
        return folder
    s = pp.image_size
    with atomic_dir(folder) as tmp:
        images = np.memmap(tmp / IMAGES, dtype=np.uint8, mode="w+", shape=(len(split), s, s))
        decode_into(split.paths, pp, images, workers=workers, progress=progress)
        images.flush()
        del images
        (tmp / INDEX).write_text(
            json.dumps(
                {
                    "version": CACHE_VERSION,
                    "root": str(split.root),
                    "split": split.name,
                    "n": len(split),
                    "fingerprint": dataset_fingerprint(split),
                    "preprocess": pp.to_dict(),
                    "rel_paths": split.rel_paths,
                }
            )
        )
    return folder
