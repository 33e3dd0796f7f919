"""Typed sections of an artifact manifest (stdlib only: this is on the light runtime path).

    verification   GoldenRecord     the golden vectors ``mxa-edge verify`` checks (runtime/verify.py)
      .tolerance     LogitTolerance
      .guard         GoldenGuardScores  the input guard's scores on the same images
      .checked_on    KernelClassChecks  the INT8 kernel classes export ran them on (export/portability.py)
    guard          GuardRecord      the input guard (mxa_edge.decision.guard): file, threshold, how it was fitted
      .held_out      GuardFlagRates     its flag rates on the held-out split at export (guard.guard_drift)
    quantization   QuantizationRecord  the INT8 tool's settings (the target's exporter, BackendOutput.quantization)
      .accuracy_control  AccuracyControlRecord  the re-quantization after a failed gate (export/accuracy_control.py)
        .history           [AccuracyControlStep]  each candidate's gate score on the tuning split
      .mixed_precision   MixedPrecisionRecord   the layers the sensitivity analysis kept in float (PTQ)
    qat            QatRecord        quantization-aware fine-tuning (export/qat.py)
      .losses        [QatEpoch]       the distillation loss per epoch
      .mixed_precision MixedPrecisionRecord
    calibration    CalibrationRecord  the INT8 calibration images: source, count, fingerprint
    export         ExportSettings   target, ONNX opset, static batch, the target's build notes
    source_run     artifact.SourceRun  the training run (a Record too)

Every record is a dataclass deriving from ``Record``, which is the ONE serialiser: ``to_dict``
writes the fields in declaration order (that order is the manifest's key order), and
``from_dict`` ignores keys it does not know and fills missing ones with their defaults, so
artifacts written by older (or newer) versions still read. Adding a field is one line here.
A section a target fills with keys of its own keeps the ones it does not declare in a field
with ``UNKNOWN_KEYS`` metadata, written back inline at that field's place.
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
# Field metadata for a ``dict`` field that keeps the keys ``from_dict`` does not know (a section a
# target fills with keys of its own): ``to_dict`` writes them inline, at the field's place.
UNKNOWN_KEYS = {"unknown_keys": True}


def if_set(*, kept_with: str | None = None):
    """A field that defaults to None and is written only when set (``OMIT_NONE``). With
    ``kept_with``: written as null too while that other field is set (a key one producer writes
    as null and the others do not write at all)."""
    return field(default=None, metadata={"omit_none": kept_with or True})


class Record:
    """Base of the manifest's typed records (dataclasses): generic ``to_dict`` / ``from_dict``.

    A field typed as a record, or as any class with ``to_dict`` / ``from_dict`` (``R``,
    ``R | None`` or ``list[R]``), is written as its dict and read back as ``R``; anything else
    is stored as the JSON value. A missing field without a default raises TypeError, which
    ``ArtifactManifest.from_dict`` reports as a malformed manifest."""

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("unknown_keys"):
                known = _field_names(type(self))
                out.update((k, _plain(v)) for k, v in (value or {}).items() if k not in known)
                continue
            omit = f.metadata.get("omit_none")
            if value is None and omit and (omit is True or getattr(self, omit) is None):
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
            if f.init and f.metadata.get("unknown_keys"):
                known = _field_names(cls)
                values[f.name] = {k: v for k, v in d.items() if k not in known}
            elif f.init and f.name in d:
                value = d[f.name]
                record, many = nested.get(f.name, (None, False))
                if record is not None and value is not None:
                    value = [record.from_dict(v) for v in value] if many else record.from_dict(value)
                values[f.name] = value
        return cls(**values)

    @classmethod
    def optional(cls, d: Mapping | None):
        """``from_dict`` for a section an artifact may lack: None when absent (or empty)."""
        return cls.from_dict(d) if d else None


class DictSection(Record):
    """A manifest section that was a plain dict before it was typed: ``section[key]`` still reads
    the value as the JSON has it, for callers written then (tests among them). New code reads
    the attributes."""

    def __getitem__(self, key: str):
        return self.to_dict()[key]


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
def _field_names(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


@functools.cache
def _nested_records(cls) -> dict[str, tuple[type, bool]]:
    """{field name: (record type, whether a list of them)} for the fields of ``cls`` typed ``R``,
    ``R | None`` or ``list[R]`` (``| None``), R a class with ``from_dict``."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        for t in typing.get_args(hint) if union else (hint,):
            many = typing.get_origin(t) is list
            inner = typing.get_args(t)[0] if many and typing.get_args(t) else t
            if isinstance(inner, type) and hasattr(inner, "from_dict"):
                out[name] = (inner, many)
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
    # The fused guard's image part (absent for a guard of the features alone, before it existed):
    image_statistics: str | None = field(default=None, metadata=OMIT_NONE)  # what they are
    image_dim: int | None = field(default=None, metadata=OMIT_NONE)
    scales: dict[str, float] | None = field(default=None, metadata=OMIT_NONE)  # part -> tuning median distance
    held_out: GuardFlagRates | None = field(default=None, metadata=OMIT_NONE)
    challenge: dict[str, dict] | None = field(default=None, metadata=OMIT_NONE)  # kind -> {"n", "flagged"}


# ------------------------------------------------------------------ quantization and export
# Producers write different subsets of these fields (ONNX Runtime or NNCF, PTQ or QAT): every
# field a producer may leave out is ``if_set()``, so an export's JSON has exactly the keys it had
# when the sections were dicts, and the declaration order keeps each producer's key order.


@dataclass(kw_only=True)
class MixedPrecisionRecord(Record):
    """The layers the label-free sensitivity analysis keeps in float (``sensitivity.FloatLayers.summary``)."""

    method: str | None = if_set()  # "skipped" when no analysis ran
    reason: str | None = if_set()  # why it was skipped
    budget: float | None = if_set()  # the simulated logit-noise budget
    noise_all_int8: float | None = if_set()
    noise_mixed: float | None = if_set()
    n_quantizable: int | None = if_set()
    float_layers: list[str] | None = if_set()  # torch module names, most sensitive first
    most_sensitive: dict[str, float] | None = if_set()  # layer -> its noise alone
    simulated_max_abs_int8_weight: int | None = if_set()  # the Int8Scheme's weight range


@dataclass(kw_only=True)
class AccuracyControlStep(Record):
    float_layers_added: int
    tune_gate_score: float  # gate.gate_score on the tuning split: >= 0 passes


@dataclass(kw_only=True)
class AccuracyControlRecord(Record):
    """``quantization.accuracy_control``: a failing INT8 export re-quantized with layers back in
    float, the gate's score on the tuning split in the loop (``accuracy_control.restore_float_layers``).
    Older OpenVINO artifacts recorded NNCF's run with a few of these keys only."""

    tool: str | None = if_set()
    metric: str | None = if_set()
    split: str | None = if_set()  # where it was fitted: "tune"
    n_images: int | None = if_set()
    gate: dict | None = if_set()  # decision.gate.GateSpec.to_dict() (GateSpec is not on the light path)
    max_iterations: int | None = if_set()
    max_float_share: float | None = if_set()  # the most of the quantizable layers it may put back in float
    history: list[AccuracyControlStep] | None = if_set()
    reverted_to_float: list[str] | None = if_set()  # torch module names
    reverted_ops: list[str] | None = if_set()  # OpenVINO: the ops that left INT8
    first_gate: dict | None = if_set()  # the failed held-out gate's summary (the manifest's ``drift`` shape)


@dataclass(kw_only=True)
class QuantizationRecord(DictSection):
    """The manifest's ``quantization`` section: the INT8 settings a target's exporter returned
    (``BackendOutput.quantization``): ORT ``quantize_static`` (onnx, tensorrt), NNCF PTQ
    (openvino), or the QAT model's export (onnx, openvino)."""

    tool: str | None = if_set()
    format: str | None = if_set()  # "QDQ"
    method: str | None = if_set()  # the calibration method
    per_channel: bool | None = if_set()
    preset: str | None = if_set()  # NNCF
    weights: str | None = if_set()
    int8_scheme: str | None = if_set()  # Int8Scheme value: portable / vnni
    overflow_fix: str | None = if_set()  # NNCF
    n_quantizers: int | None = if_set()  # QAT
    int8_weight_initializers: int | None = if_set()  # QAT, ONNX: weights folded to int8
    max_abs_int8_weight: int | None = if_set()
    activations: str | None = if_set()
    model_type: str | None = if_set()  # NNCF: "transformer"
    op_types: list[str] | None = if_set()  # ORT: the quantized op types
    activation_matmuls: str | None = if_set()
    float_bypass_inputs: int | None = if_set()
    excluded_nodes: list[str] | None = if_set()  # ORT
    ignored_patterns: list[str] | None = if_set()  # NNCF
    ignored_types: list[str] | None = if_set()
    float_nodes: list[str] | None = if_set()
    n_calibration: int | None = if_set()
    grid_inputs_in_float: list[str] | None = if_set()  # OpenVINO: the MXA blocks none of whose ops is INT8
    export_vs_torch_max_abs: float | None = if_set()  # QAT: the exported file vs the torch model
    # BackendOutput.quantization is the target's own (backends/spec.py): a target registered from
    # outside may record settings of its tool that are not fields here; they are kept, not dropped
    # (here: after the target's settings, before what the pipeline adds, as they were written).
    extra: dict = field(default_factory=dict, metadata=UNKNOWN_KEYS)
    accuracy_control: AccuracyControlRecord | None = if_set()
    mixed_precision: MixedPrecisionRecord | None = if_set()  # PTQ


@dataclass(kw_only=True)
class QatEpoch(Record):
    epoch: int
    loss: float  # mean distillation loss


@dataclass(kw_only=True)
class QatRecord(DictSection):
    """The manifest's ``qat`` section: NNCF fake-quantizers fine-tuned by distillation (``qat.qat_finetune``)."""

    tool: str | None = if_set()
    epochs: int | None = if_set()
    lr: float | None = if_set()
    batch_size: int | None = if_set()
    steps_per_epoch: int | None = if_set()
    n_train: int | None = if_set()
    optimizer: str | None = if_set()
    loss: str | None = if_set()
    losses: list[QatEpoch] | None = if_set()
    model_type: str | None = if_set()
    preset: str | None = if_set()
    int8_scheme: str | None = if_set()
    seven_bit_weight_quantizers: int | None = if_set()
    bias_correction: bool | None = if_set()
    smooth_quant: bool | None = if_set()
    ignored_patterns: list[str] | None = if_set()
    ignored_types: list[str] | None = if_set()
    n_calibration: int | None = if_set()
    mixed_precision: MixedPrecisionRecord | None = if_set()


@dataclass(kw_only=True)
class CalibrationRecord(DictSection):
    """The manifest's ``calibration`` section: the INT8 calibration images (``calibration.CalibrationSet``)."""

    source: str | None = if_set()  # the run's train split, a CSV or a folder
    n: int | None = if_set()
    fingerprint: str | None = if_set()  # first 16 hex of sha256 over the sorted relative paths


@dataclass(kw_only=True)
class ExportSettings(DictSection):
    """The manifest's ``export`` section: the target and how its files were made."""

    target: str = ""  # the export target (backend registry name)
    onnx_opset: int | None = if_set()
    onnx_parity_max_abs: float | None = if_set()  # the ONNX graph vs the torch model
    # TensorRT: the build command and whether the engine was built here (null reason when it was)
    trtexec: str | None = if_set()
    build_file: str | None = if_set()
    engine_built: bool | None = if_set()
    engine_missing_reason: str | None = if_set(kept_with="engine_built")
    gated_with: str | None = if_set()  # what the drift verdict is evidence of (backends.tensorrt)
    # ExportOptions.notes and BackendOutput.extra are free-form for a target (tests/toy_backend.py
    # records its output names): what is not a field here is kept, not dropped.
    extra: dict = field(default_factory=dict, metadata=UNKNOWN_KEYS)
    static_batch: int | None = if_set()  # --static-batch: the batch fixed in the file (set last)
