"""File and folder names of a training run and an exported artifact, and how to tell them apart.

    RUN/                        what ``mxa-edge train`` writes (``RunRecord``)
      manifest.json               format "mxa-edge-run"
      weights.safetensors, metrics.json, checkpoint.pt, log.jsonl, curves.png
      exports/<target>-<precision>[-b<N>]/     what ``mxa-edge export`` writes (``ArtifactManifest``)
        manifest.json               format "mxa-edge-artifact"
        model file(s), drift.json, drift.png, guard.npz, golden/*.npy
      exports/<name>.rejected/    an export that failed its drift gate, kept for inspection

This is the only module that spells these names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mxa_edge.formats.precision import Precision
from mxa_edge.support.errors import ConfigError

MANIFEST = "manifest.json"
METRICS = "metrics.json"
WEIGHTS = "weights.safetensors"
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CURVES = "curves.png"
DRIFT = "drift.json"
DRIFT_PLOT = "drift.png"
SIGNATURE = "model.sig"  # an artifact's signature (formats.provenance.SIGNATURE_FILE), outside its file list
EXPORTS = "exports"
REJECTED_SUFFIX = ".rejected"
PARTIAL_SUFFIX = ".partial"  # export's work folder beside the requested one: .<name>.<random>.partial
BENCH_JSON = "bench.json"  # bench's results beside the run it measured (RUN/bench.json, RUN/bench.png)
BENCH_PLOT = "bench.png"
GUARD_FILE = "guard.npz"  # an artifact's input guard (mxa_edge.decision.guard), listed in manifest ``guard.file``
GOLDEN_DIR = "golden"  # an artifact's golden vectors (runtime/verify.py), listed in ``verification.files``
GOLDEN_FILES = {
    "images": f"{GOLDEN_DIR}/images.npy",
    "exported": f"{GOLDEN_DIR}/logits_exported.npy",
    "fp32": f"{GOLDEN_DIR}/logits_fp32.npy",
}

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
    """ConfigError unless ``folder`` may receive an artifact: absent (with no file on its path),
    an empty folder, or an mxa-edge artifact holding only files of its own (which is then
    replaced). Never a user's folder or file, a symlink, a run, or an artifact with a user's
    file in it (``foreign_files``)."""

    folder = Path(folder)
    for parent in reversed(folder.absolute().parents):
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{folder}: {parent} is a file, not a folder")
    if folder.is_symlink():
        raise ConfigError(
            f"{folder}: is a symlink (to {os.readlink(folder)}); export replaces the folder it publishes, "
            f"so the link would be replaced, not followed: name the real folder ({folder.resolve()}) as --out"
        )
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, not a folder; choose another --out")
    if is_run(folder):
        raise ConfigError(
            f"{folder}: is a training run, not an artifact folder; leave --out out "
            f"(default: RUN/{EXPORTS}/<target>-<precision>) or name a new folder"
        )
    if is_artifact(folder):
        foreign = foreign_files(folder)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(
                f"{folder}: this artifact holds files its manifest does not list ({shown}); replacing it would "
                "delete them: move them out of the folder, or choose another --out"
            )
        return
    if not any(folder.iterdir()):
        return
    raise ConfigError(
        f"{folder}: exists and is not an mxa-edge artifact; refusing to replace it (its files would be lost): "
        "choose a new --out folder"
    )


def artifact_own_files(folder) -> set[str]:
    """Relative paths (``/``-separated) an artifact's manifest accounts for: its ``files``, the
    golden vectors (``verification.files``), the build file and the engine its command saves
    (``export.build_file``, ``--saveEngine=`` in ``export.trtexec``), drift.json, drift.png, the
    signature and the manifest itself."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {MANIFEST}
    own = {MANIFEST, DRIFT, DRIFT_PLOT, SIGNATURE}

    def names(record, key):
        value = record.get(key) if isinstance(record, dict) else None
        return [str(n) for n in value] if isinstance(value, (dict, list)) else []

    own.update(names(manifest, "files"))
    own.update(names(manifest.get("verification"), "files"))
    export = manifest.get("export") if isinstance(manifest.get("export"), dict) else {}
    if isinstance(export.get("build_file"), str):
        own.add(export["build_file"])
    for word in str(export.get("trtexec") or "").split():
        if word.startswith("--saveEngine="):
            own.add(word.split("=", 1)[1])
    return own


def foreign_files(folder) -> list[str]:
    """Files (and links) in an artifact folder that ``artifact_own_files`` does not account
    for, as sorted relative paths: what replacing the folder would delete of a user's."""
    folder = Path(folder)
    own = artifact_own_files(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        for name in files + links:
            path = (rel / name).as_posix()
            if path not in own:
                found.append(path)
    return sorted(found)


def stale_partials(folder, before: float) -> list[Path]:
    """Work folders of killed exports to ``folder``: ``.<name>.<random>.partial`` beside it
    (exactly that pattern, real folders, not links) last modified before ``before`` (a
    timestamp: an export still running to the same name keeps its own)."""
    folder = Path(folder)
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.[A-Za-z0-9_]+{re.escape(PARTIAL_SUFFIX)}")
    try:
        entries = list(folder.parent.iterdir())
    except OSError:
        return []
    stale = []
    for p in entries:
        try:
            if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and p.stat().st_mtime < before:
                stale.append(p)
        except OSError:
            continue
    return sorted(stale)
