"""File and folder names of a training run and an exported artifact, and how to tell them apart.

    RUN/                        what ``mxa-edge train`` writes (``RunRecord``)
      manifest.json               format "mxa-edge-run"
      weights.safetensors, metrics.json, checkpoint.pt, log.jsonl, curves.png
      exports/<target>-<precision>[-b<N>]/     what ``mxa-edge export`` writes (``ArtifactManifest``)
        manifest.json               format "mxa-edge-artifact"
        model file(s), drift.json, drift.png
      exports/<name>.rejected/    an export that failed its drift gate, kept for inspection

This is the only module that spells these names.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "manifest.json"
METRICS = "metrics.json"
WEIGHTS = "weights.safetensors"
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CURVES = "curves.png"
DRIFT = "drift.json"
DRIFT_PLOT = "drift.png"
EXPORTS = "exports"
REJECTED_SUFFIX = ".rejected"

RUN_FORMAT = "mxa-edge-run"
ARTIFACT_FORMAT = "mxa-edge-artifact"


def manifest_format(folder) -> str | None:
    """The ``format`` field of ``folder/manifest.json``, or None when there is no readable one."""
    try:
        value = json.loads((Path(folder) / MANIFEST).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def is_run(folder) -> bool:
    return (Path(folder) / WEIGHTS).is_file() and manifest_format(folder) == RUN_FORMAT


def is_artifact(folder) -> bool:
    return manifest_format(folder) == ARTIFACT_FORMAT


def artifact_dir_name(target: str, precision, static_batch: int | None = None) -> str:
    """``<target>-<precision>`` (e.g. ``openvino-int8``, ``onnx-qat-int8``); a batch fixed at export
    gets ``-b<N>`` so it sits beside, not over, the dynamic-batch export."""
    from mxa_edge.formats.precision import Precision

    fixed = f"-b{static_batch}" if static_batch else ""
    return f"{target}-{Precision(precision).value}{fixed}"


def default_artifact_dir(run_dir, target: str, precision, static_batch: int | None = None) -> Path:
    return Path(run_dir) / EXPORTS / artifact_dir_name(target, precision, static_batch)


def rejected_dir(artifact_dir) -> Path:
    """Where an export that failed its gate is kept: beside the requested name, never under it."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.with_name(artifact_dir.name + REJECTED_SUFFIX)


def run_artifacts(run_dir) -> list[tuple[Path, bool]]:
    """(folder, rejected) for every artifact under RUN/exports, in name order; a published
    folder hides an older ``.rejected`` one of the same name."""
    exports = Path(run_dir) / EXPORTS
    if not exports.is_dir():
        return []
    found = []
    for d in sorted(exports.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or not (d / MANIFEST).is_file():
            continue
        rejected = d.name.endswith(REJECTED_SUFFIX)
        if rejected and (d.with_name(d.name[: -len(REJECTED_SUFFIX)]) / MANIFEST).is_file():
            continue
        found.append((d, rejected))
    return found


def check_publish_target(folder) -> None:
    """ConfigError unless ``folder`` may receive an artifact: absent, an empty folder, or an
    mxa-edge artifact (which is then replaced). Never a user's folder or file, never a run."""
    from mxa_edge.errors import ConfigError

    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise ConfigError(f"{folder}: exists and is not a folder; choose another --out")
    if is_run(folder):
        raise ConfigError(
            f"{folder}: is a training run, not an artifact folder; leave --out out "
            f"(default: RUN/{EXPORTS}/<target>-<precision>) or name a new folder"
        )
    if is_artifact(folder) or not any(folder.iterdir()):
        return
    raise ConfigError(
        f"{folder}: exists and is not an mxa-edge artifact; refusing to replace it (its files would be lost): "
        "choose a new --out folder"
    )
