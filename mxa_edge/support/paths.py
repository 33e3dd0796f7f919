"""Where mxa-edge keeps caches (default phantom dataset, fine-tuned teachers).

``MXA_EDGE_CACHE`` overrides the location; the default follows XDG (~/.cache/mxa-edge).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("MXA_EDGE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mxa-edge"
