"""Is a small phantom finding visible at all? A one-number detector as the floor a model should beat.

For each frontal image of a CheXpert-layout split (default: the embedded phantoms' held-out
split), resized to the training resolution: the largest white top-hat response (scipy's
grey-scale opening residue, a square of --radius px) inside a central lung window. Its AUC
per finding says whether the finding leaves a bright, small mark a detector can find; a
student scoring far below it is failing to learn the mark, not facing an invisible one.
Meaningful for bright focal findings (Lung Lesion, Fracture's callus, Pleural Other's
plaques); diffuse ones are printed for contrast.

Run:  .venv/bin/python benchmarks/phantom_tophat_baseline.py [--data ROOT] [--split valid] [--size 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset root (default: the embedded phantoms)")
    ap.add_argument("--split", default="valid", choices=("train", "valid"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--radius", type=int, default=9, help="top-hat window side in pixels")
    args = ap.parse_args()

    import pandas as pd
    from PIL import Image
    from scipy.ndimage import white_tophat
    from sklearn.metrics import roc_auc_score

    from mxa_edge.data.default import default_phantom_root
    from mxa_edge.labels import CHEXPERT_LABELS

    root = default_phantom_root() if args.data is None else Path(args.data)
    rows = pd.read_csv(root / f"{args.split}.csv")
    rows = rows[rows["Frontal/Lateral"] == "Frontal"]
    s = args.size
    scores = []
    for path in rows["Path"]:
        img = Image.open(root.parent / path).convert("L").resize((s, s), Image.BILINEAR)
        th = white_tophat(np.asarray(img, dtype=np.float32), size=args.radius)
        scores.append(th[int(0.15 * s) : int(0.86 * s), int(0.12 * s) : int(0.88 * s)].max())
    scores = np.asarray(scores)
    print(f"{root} ({args.split}, {len(rows)} frontal images at {s} px), top-hat {args.radius} px")
    for label in CHEXPERT_LABELS[1:]:
        y = rows[label].to_numpy() == 1.0
        if 0 < y.sum() < len(y):
            print(f"{label:<28} positives {int(y.sum()):>4}  AUC {roc_auc_score(y, scores):.3f}")


if __name__ == "__main__":
    main()
