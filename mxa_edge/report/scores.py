"""Validation images and the two models' scores on them, each with the reason when unavailable.

Scores are what ``predict`` outputs: the raw logits through the artifact's ``DecisionRule``
(per-finding calibration fitted on the run's tuning split), so the report judges the same
probabilities the drift gate judged and the deployment will print. The raw logits are kept
too, for the reliability diagram's "before calibration" curve.

- The exported model runs through the runtime engine the artifact names (``open_engine``); a
  TensorRT artifact, which has no engine here, falls back to the file its drift gate ran
  (the Q/DQ ONNX through ONNX Runtime) and says so.
- The FP32 reference is the source run's PyTorch model, when torch is installed, the run
  folder is here and its weights are the ones the artifact was exported from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mxa_edge import torch_side
from mxa_edge.data.chexpert import dataset_fingerprint
from mxa_edge.data.ood import document_images, inverted, texture_images
from mxa_edge.decision import scoring
from mxa_edge.decision.guard import FEATURES_OUTPUT, IMAGE_STATISTICS, load_guard, with_image_statistics
from mxa_edge.decision.metrics import sigmoid
from mxa_edge.formats import Artifact, DataSelection, DecisionRule, RunRecord, naming
from mxa_edge.runtime.engines import open_engine, open_model_file
from mxa_edge.support.errors import ArtifactError, MissingDependencyError, MxaError

BATCH = 32


@dataclass
class Scores:
    """Calibrated probabilities (N, 14) of one model on the validation images (and its raw
    logits), or why there are none."""

    label: str  # legend name
    probs: np.ndarray | None = None  # the decision rule's calibrated probabilities
    why: str | None = None  # set when probs is None
    note: str | None = None  # a caveat on how the scores were obtained
    logits: np.ndarray | None = None  # raw model outputs, before calibration
    guard_scores: np.ndarray | None = None  # the artifact's input-guard score per image (exported model)
    challenge_scores: dict | None = None  # kind -> input-guard scores of images it should flag

    @property
    def uncalibrated(self) -> np.ndarray | None:
        """Plain sigmoid of the logits: the probabilities before the decision rule."""
        return None if self.logits is None else sigmoid(self.logits)

    def set_logits(self, logits, decision: DecisionRule) -> None:
        self.logits = np.asarray(logits)
        self.probs = decision.probabilities(self.logits)


@dataclass
class Reliability:
    """One curve of the reliability diagram: ``reliability_curve``'s dict, or why there is none."""

    label: str  # legend / table name
    model: str  # "ref" or "new" (colour)
    calibrated: bool  # after the decision rule (solid) or before (dotted)
    curve: dict | None = None
    why: str | None = None


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


def source_run(artifact: Artifact) -> tuple[RunRecord | None, str | None]:
    """(the source run's record, why not) from the artifact's ``source_run.path``."""
    path = artifact.manifest.source_run.path
    if not path:
        return None, "the manifest names no source run"
    if not (Path(path) / naming.MANIFEST).is_file():
        return None, f"the source run {path} is not on this machine"
    try:
        return RunRecord.load(path), None
    except ArtifactError as exc:
        return None, f"the source run's manifest is unusable ({exc})"


def load_validation(
    artifact: Artifact, data=None, run: RunRecord | None = None, run_why: str | None = None
) -> Validation:
    """The valid split of ``data`` (default: the source run's data root), selected as the drift
    gate selected it and read with the artifact's own preprocessing. A missing default is a gap
    (``why``); a bad ``data`` raises."""
    from mxa_edge.decision.evaluation import read_boxes

    selection = artifact.manifest.source_run.selection() or (run.data if run is not None else None)
    v = Validation(gate_fingerprint=artifact.manifest.source_run.data_fingerprint.get("valid"))
    if data is not None:
        v.source = "--data"
        # DatasetError for a wrong --data: the user asked for it
        selection = DataSelection.for_data(selection, data)
    else:
        v.source = "the source run's data root"
        if selection is None:
            v.why = f"{run_why or 'the source run names no data root'}; pass --data DIR (a CheXpert-layout root)"
            return v
        try:
            selection = selection.checked()
        except MxaError as exc:
            gone = f"{run_why}, and " if run_why else ""
            v.why = f"{gone}the source run's data root is not usable here ({exc}); pass --data DIR"
            return v
    v.root = Path(selection.root)
    v.arrays = selection.load("valid", artifact.preprocess)
    v.fingerprint = dataset_fingerprint(v.arrays.split)
    v.boxes = dict(read_boxes(v.root))
    return v


def exported_scores(artifact: Artifact, arrays, drift: dict | None) -> Scores:

    s = Scores(f"exported ({artifact.runtime}, {artifact.precision.weights})")
    try:
        engine = open_engine(artifact)
    except MissingDependencyError as exc:
        gated, runtime = (drift or {}).get("gated_file"), (drift or {}).get("gated_runtime")
        if not gated or runtime in (None, artifact.runtime) or not (artifact.path / gated).is_file():
            s.why = str(exc)
            return s
        try:
            engine = open_model_file(artifact.path / gated, runtime)
        except MxaError as exc2:
            s.why = f"{exc}; and its gated file {gated} could not run either ({exc2})"
            return s
        s.note = f"{artifact.runtime} cannot run here ({exc}); scored {gated} through {runtime}, as the drift gate did"
    except MxaError as exc:
        s.why = str(exc)
        return s
    to_input = functools.partial(arrays.model_input, preprocess=artifact.preprocess)
    run = with_image_statistics(scoring.engine_runner(engine), artifact.preprocess.value_range)
    out = scoring.score(
        run, arrays, batch=BATCH, to_input=to_input, outputs=("logits", FEATURES_OUTPUT, IMAGE_STATISTICS)
    )
    s.set_logits(out["logits"], artifact.decision)
    if artifact.manifest.guard and FEATURES_OUTPUT in out:
        s.guard_scores, s.challenge_scores = _guard_scores(artifact, engine, arrays, out)
    return s


def _guard_scores(artifact: Artifact, engine, arrays, held_out: dict) -> tuple[np.ndarray, dict]:
    """The input guard's scores on the held-out images (``held_out``: their scored outputs,
    features and image statistics) and on a small challenge set (inverted held-out images,
    generated textures and document pages: ``mxa_edge.data.ood``)."""

    guard = load_guard(artifact)
    pp = artifact.preprocess
    n = min(48, len(arrays))
    challenge = {
        "inverted held-out": [g for g in inverted(np.asarray(arrays.images[:n], np.float32) / 255.0)],
        "texture": list(texture_images(n, 256, seed=5)),
        "document": list(document_images(n, 256, seed=5)),
    }
    scored = {}
    for kind, grays in challenge.items():
        batch = np.stack([pp(g) for g in grays]).astype(np.float32)
        feats = scoring.score(scoring.engine_runner(engine), batch, batch=BATCH, outputs=("features",))["features"]
        scored[kind] = guard.score(feats, batch)
    return guard.score(held_out[FEATURES_OUTPUT], statistics=held_out[IMAGE_STATISTICS]), scored


def fp32_scores(artifact: Artifact, arrays, run: RunRecord | None, run_why: str | None) -> Scores:
    s = Scores("FP32 (PyTorch, source run)")
    if run is None:
        s.why = run_why or "the source run is not available"
        return s
    if not torch_side.installed():
        s.why = "PyTorch is not installed here (light runtime install); install the [train] extra for FP32 curves"
        return s
    expected = artifact.manifest.source_run.weights_sha256
    if expected and run.weights_sha256 and run.weights_sha256 != expected:
        s.why = (
            f"the run in {run.path} now holds other weights (sha256 {run.weights_sha256[:12]}…) than the "
            f"ones this artifact was exported from ({expected[:12]}…)"
        )
        return s
    if run.preprocess != artifact.preprocess:
        s.why = "the run's preprocessing differs from the artifact's"
        return s
    try:
        model = torch_side.load_run_model(run)
    except ImportError as exc:
        s.why = f"the training dependencies are not installed ({exc}); install the [train] extra"
        return s
    except ArtifactError as exc:
        s.why = str(exc)
        return s
    to_input = functools.partial(arrays.model_input, preprocess=artifact.preprocess)
    runner = torch_side.model_runner(model, aux=False)
    s.set_logits(scoring.score(runner, arrays, batch=BATCH, to_input=to_input)["logits"], artifact.decision)
    return s
