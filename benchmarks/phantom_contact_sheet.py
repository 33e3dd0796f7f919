"""Contact sheet of the phantom generator: a normal PA, a normal AP, and each finding at
severity 1 with its ground-truth box, at 256 px (what the default dataset stores).

    python benchmarks/phantom_contact_sheet.py [--out docs/phantom-contact-sheet.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from mxa_edge.data.phantom import PHANTOM_VERSION, render_phantom
    from mxa_edge.labels import CHEXPERT_LABELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/phantom-contact-sheet.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    panels = [("Normal PA", {}, "PA"), ("Normal AP (portable)", {}, "AP")]
    panels += [(label, {label: 1.0}, None) for label in CHEXPERT_LABELS[1:]]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.8))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(panels):
            continue
        title, findings, view = panels[i]
        rng = np.random.default_rng([args.seed, i])
        image, boxes = render_phantom(rng, args.size, findings, view=view)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        for _label, x1, y1, x2, y2 in boxes:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1.0))
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"Phantom v{PHANTOM_VERSION}: each finding at severity 1 with its box", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
