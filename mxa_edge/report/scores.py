"""Validation images and the two models' scores on them, each with the reason when unavailable.

- The exported model runs through the runtime engine the artifact names (``open_engine``); a
  TensorRT artifact, which has no engine here, falls back to the file its drift gate ran
  (the Q/DQ ONNX through ONNX Runtime) and says so.
- The FP32 reference is the source run's PyTorch model, when torch is installed, the run
  folder is here and its weights are the ones the artifact was exported from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mxa_edge.errors import ArtifactError, MissingDependencyError, MxaError
from mxa_edge.metrics import sigmoid
from mxa_edge.runtime.artifact import Artifact

BATCH = 32


@dataclass
class Scores:
    """Probabilities (N, 14) of one model on the validation images, or why there are none."""

    label: str  # legend name
    probs: np.ndarray | None = None
    why: str | None = None  # set when probs is None
    note: str | None = None  # a caveat on how the scores were obtained


@dataclass
class Validation:
    """The validation split the report computes on, or why it could not be read."""

    root: Path | None = None
    arrays: object | None = None  # SplitArrays
    fingerprint: str | None = None
    gate_fingerprint: str | None = None  # what the source run recorded for its valid split
    source: str = ""  # "--data" or "source run manifest"
    why: str | None = None
    boxes: dict = field(default_factory=dict)  # rel path -> [(label, normalized box)]

    @property
    def same_as_gate(self) -> bool | None:
        if self.fingerprint is None or self.gate_fingerprint is None:
            return None
        return self.fingerprint == self.gate_fingerprint


def source_run_manifest(artifact: Artifact) -> tuple[Path | None, dict | None, str | None]:
    """(run folder, its manifest, why not) from the artifact's ``source_run.path``."""
    run = (artifact.manifest.get("source_run") or {}).get("path")
    if not run:
        return None, None, "the manifest names no source run"
    run = Path(run)
    mpath = run / "manifest.json"
    if not mpath.is_file():
        return run, None, f"the source run {run} is not on this machine"
    try:
        return run, json.loads(mpath.read_text()), None
    except (OSError, json.JSONDecodeError) as exc:
        return run, None, f"the source run's manifest {mpath} is unreadable ({exc})"


def load_validation(
    artifact: Artifact, data=None, run_manifest: dict | None = None, run_why: str | None = None
) -> Validation:
    """The valid split of ``data`` (default: the source run's data root), read with the
    artifact's own preprocessing. A missing default is a gap (``why``); a bad ``data`` raises."""
    from mxa_edge.data.arrays import load_split_arrays
    from mxa_edge.data.chexpert import dataset_fingerprint, find_dataset_root
    from mxa_edge.evaluation import read_boxes

    settings = (run_manifest or {}).get("data") or {}
    fp = (artifact.manifest.get("source_run") or {}).get("data_fingerprint") or {}
    v = Validation(gate_fingerprint=fp.get("valid") if isinstance(fp, dict) else None)
    if data is not None:
        v.source = "--data"
        root = find_dataset_root(data)  # DatasetError for a wrong --data: the user asked for it
    else:
        v.source = "the source run's data root"
        if not settings.get("root"):
            v.why = f"{run_why or 'the source run names no data root'}; pass --data DIR (a CheXpert-layout root)"
            return v
        try:
            root = find_dataset_root(settings["root"])
        except MxaError as exc:
            v.why = f"the source run's data root is not usable here ({exc}); pass --data DIR"
            return v
    v.root = root
    v.arrays = load_split_arrays(
        root,
        "valid",
        artifact.preprocess,
        uncertainty=settings.get("uncertainty", "u1"),
        blank=settings.get("blank", "negative"),
        frontal_only=settings.get("frontal_only", True),
        ap_pa=settings.get("ap_pa"),
    )
    v.fingerprint = dataset_fingerprint(v.arrays.split)
    v.boxes = dict(read_boxes(root))
    return v


def exported_scores(artifact: Artifact, arrays, drift: dict | None) -> Scores:
    from mxa_edge.runtime.engines import open_engine, open_model_file

    s = Scores(f"exported ({artifact.backend}, {artifact.precision.get('weights', '?')})")
    try:
        engine = open_engine(artifact)
    except MissingDependencyError as exc:
        gated, runtime = (drift or {}).get("gated_file"), (drift or {}).get("gated_runtime")
        if not gated or runtime in (None, artifact.backend) or not (artifact.path / gated).is_file():
            s.why = str(exc)
            return s
        try:
            engine = open_model_file(artifact.path / gated, runtime)
        except MxaError as exc2:
            s.why = f"{exc}; and its gated file {gated} could not run either ({exc2})"
            return s
        s.note = f"{artifact.backend} cannot run here ({exc}); scored {gated} through {runtime}, as the drift gate did"
    except MxaError as exc:
        s.why = str(exc)
        return s
    pp = artifact.preprocess
    logits = [engine.run(arrays.model_input(slice(i, i + BATCH), pp))["logits"] for i in range(0, len(arrays), BATCH)]
    s.probs = sigmoid(np.concatenate(logits))
    return s


def fp32_scores(
    artifact: Artifact, arrays, run_dir: Path | None, run_manifest: dict | None, run_why: str | None
) -> Scores:
    s = Scores("FP32 (PyTorch, source run)")
    if run_manifest is None:
        s.why = run_why or "the source run is not available"
        return s
    try:
        import torch
    except ImportError:
        s.why = "PyTorch is not installed here (light runtime install); install the [train] extra for FP32 curves"
        return s
    expected = (artifact.manifest.get("source_run") or {}).get("weights_sha256")
    if expected and run_manifest.get("weights_sha256") and run_manifest["weights_sha256"] != expected:
        s.why = (
            f"the run in {run_dir} now holds other weights (sha256 {run_manifest['weights_sha256'][:12]}…) than the "
            f"ones this artifact was exported from ({expected[:12]}…)"
        )
        return s
    if run_manifest.get("preprocess") != artifact.manifest.get("preprocess"):
        s.why = "the run's preprocessing differs from the artifact's"
        return s
    try:
        from mxa_edge.training.run_io import load_run

        model, _ = load_run(run_dir)
    except ImportError as exc:
        s.why = f"the training dependencies are not installed ({exc}); install the [train] extra"
        return s
    except ArtifactError as exc:
        s.why = str(exc)
        return s
    pp = artifact.preprocess
    out = []
    with torch.no_grad():
        for i in range(0, len(arrays), BATCH):
            out.append(model(torch.from_numpy(arrays.model_input(slice(i, i + BATCH), pp))).numpy())
    s.probs = sigmoid(np.concatenate(out))
    return s
