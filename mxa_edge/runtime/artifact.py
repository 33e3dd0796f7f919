"""An exported artifact folder, read and verified (numpy/stdlib only: the light runtime).

    ARTIFACT/
      manifest.json   format, labels, thresholds, preprocess, precision, files {name: sha256}, ...
      model file(s)   model.onnx / model.int8.onnx / model.xml + model.bin / model.qdq.onnx
      drift.json      the drift gate's table; drift.png its plot

Every model file's SHA-256 is checked against the manifest BEFORE anything loads it, so a
truncated copy or a swapped file is refused instead of silently giving other predictions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mxa_edge.errors import ArtifactError
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.preprocess import Preprocess

FORMAT = "mxa-edge-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Artifact:
    path: Path
    manifest: dict

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.manifest["labels"])

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.manifest["preprocess"])

    @property
    def thresholds(self) -> dict[str, float]:
        t = self.manifest.get("thresholds") or {}
        return {label: float(t.get(label, 0.5)) for label in self.labels}

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def entry(self) -> Path:
        return self.path / self.manifest["entry"]

    @property
    def precision(self) -> dict:
        return dict(self.manifest.get("precision") or {})

    @property
    def outputs(self) -> list[str]:
        return list(self.manifest.get("outputs") or ["logits"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_artifact(path) -> Artifact:
    """Read ``path/manifest.json`` and verify every listed file; raises ArtifactError."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        hint = " (the export failed its drift gate)" if path.name.endswith(".rejected") else ""
        raise ArtifactError(
            f"{path}: not an mxa-edge artifact, no {MANIFEST}{hint}; pass the folder `mxa-edge export` wrote"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{mpath}: format_version {manifest.get('format_version')} is not supported by this version "
            f"(reads {FORMAT_VERSION}); re-export the model or upgrade mxa-edge"
        )
    if tuple(manifest.get("labels", ())) != CHEXPERT_LABELS:
        raise ArtifactError(f"{mpath}: labels differ from this version's 14 CheXpert findings")
    files = manifest.get("files") or {}
    if manifest.get("entry") not in files:
        raise ArtifactError(f"{mpath}: entry {manifest.get('entry')!r} is not among the hashed files")
    for name, expected in files.items():
        f = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{mpath}: file name {name!r} points outside the artifact")
        if not f.is_file():
            raise ArtifactError(f"{f}: missing; the artifact is incomplete (copy the whole folder)")
        if _sha256(f) != expected:
            raise ArtifactError(f"{f}: SHA-256 differs from the manifest; the file was changed or is incomplete")
    return Artifact(path, manifest)
