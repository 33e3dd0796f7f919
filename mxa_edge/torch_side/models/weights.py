"""Student weights on disk (torch): safetensors only, never pickled code.

``load_run`` rebuilds the student from the run's ``RunRecord`` alone and checks the weights'
SHA-256 against it before loading them.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.formats import RunRecord
from mxa_edge.support.errors import ArtifactError
from mxa_edge.support.fileio import atomic_path, sha256_file
from mxa_edge.torch_side.models.student import build_student


def save_weights(model, path: Path) -> str:
    """Save a state dict as safetensors (atomically); returns its SHA-256."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return sha256_file(path)


def load_run(run, device: str = "cpu"):
    """(student in eval mode, RunRecord) from a run folder (or its loaded RunRecord)."""
    from safetensors.torch import load_file

    record = run if isinstance(run, RunRecord) else RunRecord.load(run)
    weights = record.weights_path
    if not weights.is_file():
        raise ArtifactError(f"{record.path}: no {weights.name}; the run did not finish an epoch")
    if record.weights_sha256 and sha256_file(weights) != record.weights_sha256:
        raise ArtifactError(f"{weights}: SHA-256 differs from the manifest; the file was changed or is incomplete")
    model = build_student(record.model, record.preprocess.value_range)
    model.load_state_dict(load_file(str(weights), device=device))
    return model.to(device).eval(), record


def initial_student(record: RunRecord):
    """(the run's student as training started, in eval mode, None), or (None, why it cannot be rebuilt).

    The same construction as ``mxa-edge train`` (``training.pipeline.build_initial_student``): the
    run's ModelSpec built under its seed, then its ``--student-weights`` file if it had one, so
    every parameter (the MXA ROI predictors among them) has the value it started training from.
    Evaluation uses its boxes as the untrained baseline of localization.
    """
    import torch

    seed = record.train_config.get("seed")
    if seed is None:
        return None, "the run does not record its seed"
    with torch.random.fork_rng():  # seeded init without leaving the global RNG changed
        torch.manual_seed(seed)
        model = build_student(record.model, record.preprocess.value_range)
    init = record.student_init
    if init.get("kind") == "pretrained":  # the backbone started from a file: it must be that file
        from mxa_edge.torch_side.models.pretrained import load_student_weights

        path = Path(init.get("weights", ""))
        if not path.is_file() or sha256_file(path) != init.get("sha256"):
            return None, f"the run started from {path}, which is not on this machine unchanged"
        load_student_weights(model, path)
    return model.eval(), None
