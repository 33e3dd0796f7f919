"""Typed sections of an artifact manifest (stdlib only: this is on the light runtime path).

    verification   GoldenRecord     the golden vectors ``mxa-edge verify`` checks (runtime/verify.py)
      .tolerance     LogitTolerance
      .guard         GoldenGuardScores  the input guard's scores on the same images
      .checked_on    KernelClassChecks  the INT8 kernel classes export ran them on (export/portability.py)
    guard          GuardRecord      the input guard (mxa_edge.decision.guard): file, threshold, how it was fitted
      .held_out      GuardFlagRates     its flag rates on the held-out split at export (guard.guard_drift)
    source_run     artifact.SourceRun  the training run (a Record too)

Every record is a dataclass deriving from ``Record``, which is the ONE serialiser: ``to_dict``
writes the fields in declaration order (that order is the manifest's key order), and
``from_dict`` ignores keys it does not know and fills missing ones with their defaults, so
artifacts written by older (or newer) versions still read. Adding a field is one line here.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from mxa_edge.formats.naming import GUARD_FILE

# Field metadata: the key is written only when the value is not None (it was optional, or added
# later, in the JSON: writing null would change what older exports wrote).
OMIT_NONE = {"omit_none": True}


class Record:
    """Base of the manifest's typed records (dataclasses): generic ``to_dict`` / ``from_dict``.

    A field typed as a record, or as any class with ``to_dict`` / ``from_dict`` (``R`` or
    ``R | None``), is written as its dict and read back as ``R``; anything else is stored as
    the JSON value. A missing field without a default raises TypeError, which
    ``ArtifactManifest.from_dict`` reports as a malformed manifest."""

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, d: Mapping):
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        nested = _nested_records(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.init and f.name in d:
                value = d[f.name]
                record = nested.get(f.name)
                values[f.name] = record.from_dict(value) if record is not None and value is not None else value
        return cls(**values)

    @classmethod
    def optional(cls, d: Mapping | None):
        """``from_dict`` for a section an artifact may lack: None when absent (or empty)."""
        return cls.from_dict(d) if d else None


def _plain(value):
    """A record's value as JSON-ready data."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@functools.cache
def _nested_records(cls) -> dict[str, type]:
    """{field name: record type} for the fields of ``cls`` typed ``R`` or ``R | None``, R a
    class with ``from_dict``."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        for t in typing.get_args(hint) if union else (hint,):
            if isinstance(t, type) and hasattr(t, "from_dict"):
                out[name] = t
    return out


# ------------------------------------------------------------------------ verification (golden)


@dataclass(kw_only=True)
class LogitTolerance(Record):
    max_abs_logit: float  # max |logit - recorded exported logit| verify accepts


@dataclass(kw_only=True)
class GoldenGuardScores(Record):
    """The input guard's scores on the golden images at gate time, and verify's tolerance on them."""

    scores_exported: list[float]
    scores_fp32: list[float]
    tolerance: float


@dataclass(kw_only=True)
class KernelClassChecks(Record):
    """The INT8 kernel classes (machine.int8_kernel_class) export ran the golden images on
    (``export.portability.check_kernel_paths``; the drift table carries the same record)."""

    int8_scheme: str | None = None  # portable / vnni; None for a float export
    build_class: str | None = None
    # class -> {"how", "checked", and what was measured: "max_abs_logit", "tolerance", "passed",
    # "detected_class", guard-score gaps; or "why" / "bound" when it was not run}
    classes: dict[str, dict] = field(default_factory=dict)
    max_abs_int8_weight: int | None = field(default=None, metadata=OMIT_NONE)
    saturation_free: bool | None = field(default=None, metadata=OMIT_NONE)

    def checked(self) -> list[str]:
        """The classes whose outputs were compared."""
        return [c for c, entry in self.classes.items() if entry.get("checked")]


@dataclass(kw_only=True)
class GoldenRecord(Record):
    """The manifest's ``verification`` section: the golden vectors (``naming.GOLDEN_FILES``, each
    with its sha256), verify's tolerance and rule, and the gate machine they were recorded on."""

    n: int
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    max_abs_logit_exported_vs_fp32: float | None = None
    tolerance: LogitTolerance
    rule: str = ""
    guard: GoldenGuardScores | None = field(default=None, metadata=OMIT_NONE)
    gated_runtime: str | None = field(default=None, metadata=OMIT_NONE)
    executed_precision: str | None = field(default=None, metadata=OMIT_NONE)
    gate_isa: str | None = field(default=None, metadata=OMIT_NONE)
    gate_machine: dict | None = field(default=None, metadata=OMIT_NONE)  # machine.machine_fingerprint()
    checked_on: KernelClassChecks | None = field(default=None, metadata=OMIT_NONE)  # None: exported before it


# ------------------------------------------------------------------------------- input guard


@dataclass(kw_only=True)
class GuardFlagRates(Record):
    """The guard on the held-out split at export, FP32 vs exported model (``guard.guard_drift``)."""

    n_images: int
    threshold: float
    flag_rate_ref: float
    flag_rate_new: float
    flag_rate_delta: float
    flag_rate_delta_ci: list[float] | None = None
    agreement: float | None = None
    median_score_change: float | None = None


@dataclass(kw_only=True)
class GuardRecord(Record):
    """The manifest's ``guard`` section (``guard.InputGuard.record``); its arrays are in ``file``."""

    file: str = GUARD_FILE
    method: str | None = None
    output: str | None = None  # the graph output it scores
    feature_dim: int | None = None
    threshold: float
    threshold_rule: str | None = None
    percentile: float | None = None
    fitted_on: dict[str, str] = field(default_factory=dict)  # what -> split
    n_fit: int = 0  # training images of the mean/covariance
    n_threshold: int = 0  # tuning images of the threshold
    shrinkage: float | None = None
    tune_scores: dict[str, float] = field(default_factory=dict)  # quantiles of the tuning scores
    held_out: GuardFlagRates | None = field(default=None, metadata=OMIT_NONE)
    challenge: dict[str, dict] | None = field(default=None, metadata=OMIT_NONE)  # kind -> {"n", "flagged"}
