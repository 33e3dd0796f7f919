"""``mxa-edge eval``: metrics of a run (PyTorch) or an exported artifact (runtime engine)
on a CheXpert-layout split, plus MXA ROI localization against phantom ground-truth boxes.
"""

from __future__ import annotations

import csv
import functools
from collections import defaultdict
from pathlib import Path

import numpy as np

from mxa_edge import torch_side
from mxa_edge.data.arrays import SplitArrays
from mxa_edge.decision.metrics import (
    box_coverage,
    evaluate,
    localization_vs_baselines,
    random_boxes_like,
    reliability_curve,
    sigmoid,
)
from mxa_edge.decision.scoring import engine_runner, score
from mxa_edge.formats import Artifact, DataSelection, RunRecord, load_artifact, naming
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.runtime.engines import open_engine
from mxa_edge.support.errors import ArtifactError
from mxa_edge.support.progress import SILENT, Reporter


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


# Draws of the random-position box per ground-truth box: the per-box scores are averaged over
# them, so the baseline is the chance level of a box of that size, not one lucky or unlucky draw.
RANDOM_BOX_DRAWS = 64


def roi_localization(
    rois: np.ndarray,
    arrays: SplitArrays,
    boxes: dict,
    init_rois: np.ndarray | None = None,
    init_unavailable: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict | None:
    """How well the MXA boxes (N, K, 4) cover the ground-truth finding boxes, against chance.

    Two baselines on the same images and boxes: ``init_box``, the box the same model's ROI
    predictor gives at initialisation (``init_rois``, the untrained model of the run's spec and
    seed; ``init_unavailable`` says why it is absent), and ``random_box``, a box of the model's
    own size per image at a uniformly random position inside the image (``RANDOM_BOX_DRAWS``
    seeded draws). Each metric has a bootstrap CI over images, and each baseline the model's
    paired gain over it (``model_minus_this``) with its CI, from the same resamples.

    Phantom images are square, so the centre crop is the whole image and normalized boxes
    share one frame. 'No Finding' and 'Support Devices' boxes are skipped: they span the
    lungs or the whole chest, not a lesion.
    """
    image, gt = [], []
    for i, rel in enumerate(arrays.split.rel_paths):
        for label, box in boxes.get(rel, []):
            if label in ("No Finding", "Support Devices"):
                continue
            image.append(i)
            gt.append(box)
    if not gt:
        return None
    image, gt = np.array(image), np.array(gt)
    model_boxes = rois[image, -1]
    candidates = {
        "model": model_boxes,
        "random_box": random_boxes_like(model_boxes, RANDOM_BOX_DRAWS, np.random.default_rng(seed)),
    }
    if init_rois is not None:
        candidates["init_box"] = init_rois[image, -1]
    scored = localization_vs_baselines(gt, image, candidates, reference="model", n_boot=n_boot, seed=seed)
    result = {"stage": "last MXA block", **scored.pop("model")}
    result["per_mxa_block"] = [box_coverage(rois[image, k], gt) for k in range(rois.shape[1])]
    random_box = scored.pop("random_box") | {
        "what": f"the model's box size at a uniformly random position inside the image ({RANDOM_BOX_DRAWS} draws)"
    }
    if init_rois is not None:
        init = init_rois[:, -1]
        init_box = scored.pop("init_box") | {
            "what": "the ROI predictor of an untrained model of the run's spec and seed",
            # How input-dependent the untrained predictor is: its weights are small but not zero.
            "box_mean": [float(v) for v in init.mean(axis=0)],
            "box_sd": [float(v) for v in init.std(axis=0)],
        }
    else:
        init_box = {"unavailable": init_unavailable or "not computed"}
    result["baselines"] = {"init_box": init_box, "random_box": random_box}
    result.update(scored)  # n_images, n_boot, ci_level
    return result


def decision_metrics(arrays: SplitArrays, logits, decision, *, n_boot: int, seed: int, split: str = "valid") -> dict:
    """The metrics of what predict outputs: ``evaluate`` on the decision rule's calibrated
    probabilities at its per-finding thresholds (sensitivity/specificity with CIs), plus the ECE
    and reliability curve before and after calibration. train (metrics.json) and eval share it."""

    probs = decision.probabilities(logits)
    metrics = evaluate(
        arrays.targets, probs, arrays.mask, n_boot=n_boot, seed=seed, threshold=decision.threshold_array()
    )
    raw = reliability_curve(arrays.targets, sigmoid(logits), arrays.mask)
    metrics["split"] = split
    metrics["calibration"] = {
        "method": decision.calibration,
        "fitted_on": decision.fitted_on.get("split", "tune"),
        "ece_before": raw["ece"],
        "ece_after": metrics["ece"],
        "reliability_before": raw,
        "reliability_after": reliability_curve(arrays.targets, probs, arrays.mask),
    }
    metrics["operating_point"] = {"policy": decision.policy, "fitted_on": decision.fitted_on.get("split", "tune")}
    datasets = list(dict.fromkeys(arrays.split.dataset))
    if len(datasets) > 1:  # a merged split: each dataset on its own as well as pooled
        names = np.asarray(arrays.split.dataset)
        metrics["per_dataset"] = {}
        for name in datasets:
            rows = np.flatnonzero(names == name)
            one = decision_metrics(arrays.take(rows), np.asarray(logits)[rows], decision, n_boot=n_boot, seed=seed)
            metrics["per_dataset"][name] = {
                "n_images": int(len(rows)),
                "macro_auc": one["macro_auc"],
                "macro_auc_ci": one["macro_auc_ci"],
                "ece_before": one["calibration"]["ece_before"],
                "ece_after": one["calibration"]["ece_after"],
                # findings the dataset never labels are absent here: their cells are masked
                "per_label": {
                    k: {"auc": v["auc"], "n_pos": v["n_pos"]}
                    for k, v in one["per_label"].items()
                    if v["n_pos"] + v["n_neg"]
                },
            }
    return metrics


def evaluate_model(
    model_path: Path,
    data: Path | None = None,
    split: str = "valid",  # the held-out split; "tune" and "train" are for diagnosis only
    n_boot: int = 1000,
    seed: int = 0,
    limit: int | None = None,
    reporter: Reporter = SILENT,
    *,
    allow_rejected: bool = False,
    trust=None,
) -> dict:
    """Evaluate a run folder or an exported artifact on ``split`` of its own data selection (an
    artifact follows its source run's: the same views, projections and label policy its drift
    gate used); ``data`` points the same selection at another copy of the dataset.
    ``allow_rejected``/``trust``: as ``load_artifact``; the result's ``artifact`` records both."""
    model_path = Path(model_path)
    if naming.is_artifact(model_path):
        artifact = load_artifact(model_path, allow_rejected=allow_rejected, trust=trust)
        selection, pp = artifact.manifest.source_run.selection(), artifact.preprocess
        decision = artifact.decision
        if selection is None and data is None:
            raise ArtifactError(
                f"{model_path}: its source run is not on this machine and the artifact names no data; pass --data"
            )
    elif (model_path / naming.MANIFEST).is_file():
        artifact, run = None, RunRecord.load(model_path)
        selection, pp, decision = run.data, run.preprocess, run.decision
    else:
        raise ArtifactError(
            f"{model_path}: no {naming.MANIFEST}; pass a run folder from `mxa-edge train` or an exported artifact"
        )
    if data is not None:  # the same selection on another copy of the data (or the default policy)
        selection = DataSelection.for_data(selection, data)
    arrays = selection.load(split, pp, limit=limit, progress=reporter.callback(f"decoding {split} images"))
    if artifact is not None:
        logits, rois = _artifact_outputs(artifact, arrays, pp)
    else:
        logits, rois = _run_outputs(run, arrays, pp)
    root = Path(selection.root)
    # What predict would print: the model's calibration and operating points.
    metrics = decision_metrics(arrays, logits, decision, n_boot=n_boot, seed=seed, split=split)
    metrics.update({"model": str(model_path), "data": str(root)})
    if artifact is not None:
        metrics["artifact"] = {
            "gate": artifact.gate_line(),
            "allow_rejected": artifact.allowed_rejected,
            "signature": artifact.provenance.to_dict(),
        }
    if split in ("train", "tune"):
        metrics["warning"] = f"the {split} split was used to fit this model or its decisions: not a held-out result"
    boxes = read_boxes(root) if rois is not None else {}
    if boxes:
        source = run if artifact is None else _source_run(artifact)
        init_rois, init_unavailable = _init_rois(source, arrays, pp, reporter)
        loc = roi_localization(
            rois, arrays, boxes, init_rois, init_unavailable=init_unavailable, n_boot=n_boot, seed=seed
        )
        if loc is not None:
            metrics["roi_localization"] = loc
    return metrics


def _source_run(artifact: Artifact) -> RunRecord | str:
    """The run an artifact was exported from, when it is on this machine unchanged; else why not."""
    src = artifact.manifest.source_run
    if not src.path or not (Path(src.path) / naming.MANIFEST).is_file():
        return "its source run is not on this machine"
    record = RunRecord.load(src.path)
    if src.weights_sha256 and record.weights_sha256 != src.weights_sha256:
        return f"the run at {src.path} is not the one this artifact was exported from"
    return record


def _init_rois(source: RunRecord | str, arrays: SplitArrays, pp: Preprocess, reporter: Reporter):
    """(boxes of the run's model at initialisation (N, K, 4), None), or (None, why they are missing)."""
    if isinstance(source, str):
        return None, source

    model, why = torch_side.initial_student(source)  # (None, "torch is not installed") on a runtime install
    if model is None:
        return None, why
    to_input = functools.partial(arrays.model_input, preprocess=pp)
    out = score(
        torch_side.model_runner(model, aux=True),
        arrays,
        batch=128,
        to_input=to_input,
        outputs=("roi",),
        progress=reporter.callback("boxes of the untrained model"),
    )
    return out["roi"], None


def _run_outputs(run: RunRecord, arrays: SplitArrays, pp: Preprocess):

    model = torch_side.load_run_model(run)
    to_input = functools.partial(arrays.model_input, preprocess=pp)
    runner = torch_side.model_runner(model, aux=True)
    out = score(runner, arrays, batch=128, to_input=to_input, outputs=("logits", "roi"))
    return out["logits"], out.get("roi")


def _artifact_outputs(artifact: Artifact, arrays: SplitArrays, pp: Preprocess):

    engine = open_engine(artifact)
    to_input = functools.partial(arrays.model_input, preprocess=pp)
    out = score(engine_runner(engine), arrays, batch=32, to_input=to_input, outputs=("logits", "roi"))
    return out["logits"], out.get("roi")
