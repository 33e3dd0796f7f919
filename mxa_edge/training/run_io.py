"""A training run folder: what ``mxa-edge train`` writes and export/eval read.

    RUN/
      weights.safetensors   selected student weights (EMA when enabled), no pickled code
      manifest.json         labels, preprocessing, model spec, data, training config, versions
      metrics.json          validation metrics of the selected weights
      checkpoint.pt         last epoch's full training state, for --resume (tensors only)
      log.jsonl             one line per step window and per epoch
      curves.png            training curves

``load_run`` rebuilds the student from the manifest alone, so nothing about the model can
silently differ between training and export.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.errors import ArtifactError
from mxa_edge.fileio import atomic_path, read_json, sha256_file
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.models.configs import ModelSpec
from mxa_edge.preprocess import Preprocess

WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"


def save_weights(model, path: Path) -> str:
    """Save a state dict as safetensors (atomically); returns its SHA-256."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return sha256_file(path)


def read_manifest(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{run_dir}: not a training run (no {MANIFEST}); point to the folder `mxa-edge train` wrote"
        )
    manifest = read_json(manifest_path)
    if tuple(manifest.get("labels", ())) != CHEXPERT_LABELS:
        raise ArtifactError(f"{manifest_path}: labels differ from this version's 14 CheXpert findings")
    return manifest


def load_run(run_dir: Path, device: str = "cpu"):
    """(model in eval mode, manifest) from a run folder; verifies the weights hash."""
    from safetensors.torch import load_file

    from mxa_edge.models.student import build_student

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{run_dir}: no {WEIGHTS}; the run did not finish an epoch")
    expected = manifest.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise ArtifactError(f"{weights}: SHA-256 differs from the manifest; the file was changed or is incomplete")
    spec = ModelSpec.from_dict(manifest["model"])
    model = build_student(spec)
    model.load_state_dict(load_file(str(weights), device=device))
    return model.to(device).eval(), manifest


def run_preprocess(manifest: dict) -> Preprocess:
    return Preprocess.from_dict(manifest["preprocess"])
