"""How well an artifact's input guard tells frontal chest radiographs from everything else.

    python benchmarks/input_guard.py runs/default/exports/onnx-int8 [--n 200] [--json out.json]

Through the torch-free runtime (``Predictor.predict_arrays``: the artifact's preprocessing,
engine and guard, exactly as ``predict``), on images the export's own challenge set did not use
(other seeds; every lateral of the held-out CSV):

* held-out frontal images of the artifact's run (``valid.csv``; for a merged run, each
  dataset's too): should NOT be flagged (~1-2%: the threshold is the tuning split's 99th
  percentile);
* lateral views of the same held-out CSV; the same frontal images inverted; generated
  textures and document pages: should be flagged;
* the real radiographs in ``../shared/data/real-samples`` (when present): for a model trained
  on phantoms, real films are out of distribution, and flagging them is the guard working;
* ``--population NAME=ROOT`` (repeatable): the held-out frontals of another CheXpert-layout
  root, e.g. another population (pediatric films for an adult model) or phantoms for a model
  trained on real films: what a site should expect if such images reach the box.

Prints the flag rate per kind with a Wilson 95% interval, and the score quantiles.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = ROOT.parent / "shared" / "data" / "real-samples" / "images"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def gray_of(images_u8: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(img, np.float32) / 255.0 for img in images_u8]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--n", type=int, default=200, help="images per generated kind and held-out frontals")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--population",
        action="append",
        default=[],
        metavar="NAME=ROOT",
        help="also score the held-out frontals of this CheXpert-layout root (up to --n of them)",
    )
    args = ap.parse_args(argv)

    from mxa_edge.data.ood import document_images, held_out_laterals, texture_images
    from mxa_edge.formats import DataSelection
    from mxa_edge.imaging.imageio import load_radiograph
    from mxa_edge.runtime.predict import Predictor
    from mxa_edge.support.machine import isa_line

    predictor = Predictor(args.artifact, verify=False)
    selection = predictor.artifact.manifest.source_run.data
    pp = predictor.preprocess
    valid = selection.load("valid", pp)
    frontal = gray_of(np.asarray(valid.images))
    laterals = held_out_laterals(selection, pp, limit=len(valid) + 1)  # every lateral of valid.csv
    kinds = {"held-out frontal (should pass)": frontal}
    names = np.asarray(valid.split.dataset)
    if len(set(names)) > 1:  # a merged run: each dataset's held-out films too
        kinds.update(
            {f"  of which {name}": [frontal[i] for i in np.flatnonzero(names == name)] for name in dict.fromkeys(names)}
        )
    kinds |= {
        "lateral": gray_of(np.asarray(laterals.images)) if laterals is not None else [],
        "inverted frontal": [1.0 - g for g in frontal[: args.n]],
        "texture": list(texture_images(args.n, 256, seed=7)),
        "document": list(document_images(args.n, 256, seed=7)),
    }
    for spec in args.population:
        name, _, root = spec.partition("=")
        if not root:
            ap.error(f"--population {spec!r}: expected NAME=ROOT")
        other = DataSelection(root=root).load("valid", pp, limit=args.n)
        kinds[name] = gray_of(np.asarray(other.images))
    if REAL_SAMPLES.is_dir():
        real = []
        for p in sorted(REAL_SAMPLES.iterdir()):
            try:
                real.append(load_radiograph(p))
            except Exception:  # noqa: BLE001 - a file the loader refuses is not part of this measurement
                pass
        kinds["real radiographs (../shared)"] = real

    out = {"artifact": str(args.artifact), "isa": isa_line(), "threshold": predictor.guard.threshold, "kinds": {}}
    print(f"{args.artifact}  guard threshold {predictor.guard.threshold:.2f}  ({isa_line()})")
    print(f"{'kind':34s} {'n':>5s} {'flagged':>8s} {'95% CI':>15s} {'score p5/p50/p95':>22s}")
    for kind, images in kinds.items():
        if not images:
            print(f"{kind:34s} {'0':>5s}  (none in this dataset)")
            continue
        scores = []
        for i in range(0, len(images), 64):
            scores += [r.ood_score for r in predictor.predict_arrays(images[i : i + 64])]
        scores = np.asarray(scores)
        k, n = int((scores > predictor.guard.threshold).sum()), len(scores)
        lo, hi = wilson(k, n)
        q = np.percentile(scores, [5, 50, 95])
        print(f"{kind:34s} {n:5d} {k / n:8.1%} {f'{lo:.1%}–{hi:.1%}':>15s} {f'{q[0]:.1f}/{q[1]:.1f}/{q[2]:.1f}':>22s}")
        out["kinds"][kind] = {"n": n, "flagged": k, "rate": k / n, "ci95": [lo, hi], "score_p5_p50_p95": list(q)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
