"""What the report reads rather than computes: the artifact's identity, its drift record, a bench JSON.

Nothing here imports more than the standard library, numpy and the runtime's artifact reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mxa_edge.formats import Artifact
from mxa_edge.support.errors import ConfigError


def artifact_sha256(artifact: Artifact) -> str:
    """The artifact's identity: the digest its manifest carries (``formats.artifact.manifest_digest``),
    which ``load_artifact`` has checked; it covers the manifest and, through its hashes, every file."""
    return artifact.manifest.artifact_sha256


@dataclass
class Bench:
    """A ``mxa-edge bench --json`` file, read defensively: whatever rows and sections it has."""

    path: Path
    rows: list[dict] = field(default_factory=list)
    compute_bound: dict | list | str | None = None
    machine: dict | str | None = None
    other: dict = field(default_factory=dict)  # any other top-level field, shown as is
    problems: list[str] = field(default_factory=list)  # what could not be read, said in the page


def read_bench(path) -> Bench:
    """Parse a bench JSON; raises ConfigError only when the file is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such bench file; write one with `mxa-edge bench ... --json {path}`")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON file ({exc}); pass the file `mxa-edge bench --json` wrote") from None
    bench = Bench(path)
    if isinstance(doc, list):
        doc = {"rows": doc}
    if not isinstance(doc, dict):
        bench.problems.append(f"top level is a {type(doc).__name__}, not an object with rows")
        return bench
    rows = next((doc[k] for k in ("rows", "results", "backends", "benchmarks") if k in doc), None)
    if rows is None:
        bench.problems.append("no rows (looked for 'rows', 'results', 'backends')")
    elif not isinstance(rows, list):
        bench.problems.append(f"rows is a {type(rows).__name__}, not a list")
    else:
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                bench.rows.append(row)
            else:
                bench.problems.append(f"row {i} is a {type(row).__name__}, not an object: skipped")
    bench.compute_bound = doc.get("compute_bound")
    bench.machine = doc.get("machine")
    bench.other = {
        k: v
        for k, v in doc.items()
        if k not in ("rows", "results", "backends", "benchmarks", "compute_bound", "machine")
    }
    return bench


def flatten(obj, prefix: str = "") -> dict:
    """Nested dicts -> {"a.b": value}; lists and scalars are kept as values."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix or "value"] = obj
    return out
