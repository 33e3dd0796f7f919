"""``mxa-edge eval``: metrics of a run (PyTorch) or an exported artifact (runtime engine)
on a CheXpert-layout split, plus MXA ROI localization against phantom ground-truth boxes.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from mxa_edge.data.arrays import SplitArrays, load_split_arrays
from mxa_edge.errors import ArtifactError
from mxa_edge.metrics import box_coverage, evaluate, sigmoid
from mxa_edge.preprocess import Preprocess
from mxa_edge.progress import SILENT, Reporter


def read_boxes(root: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """boxes.csv (phantom datasets) -> {relative image path: [(label, [x1, y1, x2, y2])]}."""
    path = Path(root) / "boxes.csv"
    out: dict[str, list] = defaultdict(list)
    if not path.is_file():
        return out
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out[row["Path"]].append((row["label"], np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])))
    return out


def roi_localization(rois: np.ndarray, arrays: SplitArrays, boxes: dict) -> dict | None:
    """How well the MXA boxes (N, K, 4) cover the ground-truth finding boxes.

    Phantom images are square, so the centre crop is the whole image and normalized boxes
    share one frame. 'No Finding' and 'Support Devices' boxes are skipped: they span the
    lungs or the whole chest, not a lesion.
    """
    pred, gt, per_stage = [], [], defaultdict(lambda: ([], []))
    for i, rel in enumerate(arrays.split.rel_paths):
        for label, box in boxes.get(rel, []):
            if label in ("No Finding", "Support Devices"):
                continue
            for k in range(rois.shape[1]):
                per_stage[k][0].append(rois[i, k])
                per_stage[k][1].append(box)
            pred.append(rois[i, -1])
            gt.append(box)
    if not gt:
        return None
    result = box_coverage(np.array(pred), np.array(gt))
    result["stage"] = "last MXA block"
    result["per_mxa_block"] = [box_coverage(np.array(p), np.array(g)) for _, (p, g) in sorted(per_stage.items())]
    return result


def evaluate_model(
    model_path: Path,
    data: Path | None = None,
    split: str = "valid",
    n_boot: int = 1000,
    seed: int = 0,
    limit: int | None = None,
    reporter: Reporter = SILENT,
) -> dict:
    """Evaluate a run folder or an exported artifact; ``data`` defaults to the run's own data."""
    from mxa_edge.fileio import read_json

    model_path = Path(model_path)
    manifest_path = model_path / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{model_path}: no manifest.json; pass a run folder from `mxa-edge train` or an exported artifact"
        )
    manifest = read_json(manifest_path)
    root = Path(data) if data else Path(manifest["data"]["root"]) if "data" in manifest else None
    if root is None:
        raise ArtifactError(f"{model_path}: the manifest does not name its dataset; pass --data")
    from mxa_edge.data.chexpert import find_dataset_root

    root = find_dataset_root(root)
    pp = Preprocess.from_dict(manifest["preprocess"])
    d = manifest.get("data", {})
    arrays = load_split_arrays(
        root,
        split,
        pp,
        uncertainty=d.get("uncertainty", "u1"),
        blank=d.get("blank", "negative"),
        frontal_only=d.get("frontal_only", True),
        limit=limit,
        progress=reporter.callback(f"decoding {split} images"),
    )
    if manifest.get("format") == "mxa-edge-artifact":
        logits, rois = _artifact_outputs(model_path, arrays, pp)
    else:
        logits, rois = _run_outputs(model_path, arrays, pp)
    metrics = evaluate(arrays.targets, sigmoid(logits), arrays.mask, n_boot=n_boot, seed=seed)
    metrics.update({"model": str(model_path), "data": str(root), "split": split})
    if rois is not None:
        loc = roi_localization(rois, arrays, read_boxes(root))
        if loc is not None:
            metrics["roi_localization"] = loc
    return metrics


def _run_outputs(run_dir: Path, arrays: SplitArrays, pp: Preprocess):
    import torch

    from mxa_edge.training.run_io import load_run

    model, _ = load_run(run_dir)
    logits, rois = [], []
    with torch.no_grad():
        for i in range(0, len(arrays), 128):
            out = model.forward_aux(torch.from_numpy(arrays.model_input(slice(i, i + 128), pp)))
            logits.append(out["logits"].numpy())
            if "roi" in out:
                rois.append(out["roi"].numpy())
    return np.concatenate(logits), (np.concatenate(rois) if rois else None)


def _artifact_outputs(artifact_dir: Path, arrays: SplitArrays, pp: Preprocess):
    from mxa_edge.runtime.artifact import load_artifact
    from mxa_edge.runtime.engines import open_engine

    engine = open_engine(load_artifact(artifact_dir))
    logits, rois = [], []
    for i in range(0, len(arrays), 32):
        out = engine.run(arrays.model_input(slice(i, i + 32), pp))
        logits.append(out["logits"])
        if "roi" in out:
            rois.append(out["roi"])
    return np.concatenate(logits), (np.concatenate(rois) if rois else None)
