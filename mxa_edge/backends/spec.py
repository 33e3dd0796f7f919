"""The one small interface between the toolkit and an export target (torch-free).

A target is a ``BackendSpec``: what it can export (precisions, a fixed batch, QAT, accuracy
control), its torch side (the *exporter*, loaded only when exporting) and its torch-free side
(the *engine* that runs its files for predict, eval, the drift gate, the report and bench).
Hooks are callables or ``"module:attribute"`` strings, so declaring a target imports nothing.

Exporter protocol (torch side; only the methods its spec's flags promise):
    available() -> (bool, reason)
    export(model, example, out_dir, opts: ExportOptions) -> BackendOutput
    export_qat(qmodel, example, out_dir) -> BackendOutput                     (spec.qat)
    fix_batch(entry_file, batch) -> int                                       (spec.static_batch)
    export_with_accuracy_control(model, example, out_dir, opts, validation, gate, prob_ref, first)
                                                                              (spec.accuracy_control)
Engine protocol (torch-free): ``run(batch float32 (B, 1, S, S)) -> {output name: array}``,
``output_names``, and optionally ``inference_precision`` (what the runtime really executes).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mxa_edge.formats.precision import Int8Scheme, NumericFormat, Precision
from mxa_edge.support.errors import ConfigError

CALIB_METHODS = ("minmax", "entropy", "percentile")

Hook = Callable[..., Any] | str


def resolve(hook: Hook):
    """A hook given as ``"package.module:attribute"`` imported on first use, or the callable itself."""
    if isinstance(hook, str):
        module, _, attr = hook.partition(":")
        return getattr(importlib.import_module(module), attr)
    return hook


@dataclass
class ExportOptions:
    precision: Precision = Precision.FP32
    calib_method: str = "minmax"
    calibration: np.ndarray | None = None  # float32 (N, 1, S, S) in the model's range
    seed: int = 0
    # Torch module names kept in float in an INT8 export (sensitivity.choose_float_layers).
    float_layers: list[str] = field(default_factory=list)
    # Every quantizable layer, most sensitive first (accuracy control returns them to float in this order).
    layer_ranking: list[str] = field(default_factory=list)
    fp16: bool = False  # TensorRT: FP16 kernels (with --int8: INT8 with FP16 fallback)
    # INT8 weight layout: portable (7-bit, the same integers on every x86 CPU) or vnni (full range).
    int8_scheme: Int8Scheme = Int8Scheme.PORTABLE
    # Filled in by the backend for the manifest's ``export`` section.
    notes: dict = field(default_factory=dict)

    @property
    def int8(self) -> bool:
        return self.precision.int8


@dataclass
class BackendOutput:
    files: list[str]  # model files written, relative to out_dir; files[0] is the entry
    precision: NumericFormat
    quantization: dict | None = None
    # The model the drift gate runs, when it differs from the entry (TensorRT: the Q/DQ ONNX
    # through ONNX Runtime, where no engine can be built).
    gate_file: str | None = None
    gate_runtime: str | None = None
    extra: dict = field(default_factory=dict)  # goes into the manifest's ``export`` section


@dataclass(frozen=True)
class BenchVariant:
    """One more bench row for an artifact of this target: the same files run another way."""

    key: str  # appended to the row key
    label: str  # appended to the precision label
    compute: str  # which peak applies
    precision_override: str | None  # engine precision hint (None: the runtime's default)
    note: str


@dataclass(frozen=True)
class BackendSpec:
    name: str  # the export target on the command line
    runtime: str  # the engine recorded in manifests ("backend"), one per spec
    display: str  # bench and report tables
    files: str  # what an artifact holds, for the capability table
    exporter: Hook  # () -> exporter object (torch side)
    engine: Hook | None  # (model_file, *, precision, threads, cache) -> engine; None: runs elsewhere
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.INT8)
    cpu: bool = True
    gpu: bool = False
    static_batch: bool = False  # export --static-batch N
    int8_with_fp16: bool = False  # --int8 --fp16: INT8 with FP16 fallback kernels (TensorRT)
    accuracy_control: bool = False  # a failing INT8 export is re-quantized once, gate in the loop
    gate_runtime: str | None = None  # where the gate runs when this runtime cannot run here
    order: int = 100  # bench row order
    # Extra rows for an artifact in bench (OpenVINO: the FP32 IR again at the CPU's default precision).
    bench_variants: Callable[[NumericFormat], list[BenchVariant]] | None = None
    # What a bench row adds after the precision label (OpenVINO: which precision hint it ran with).
    bench_label: Callable[[NumericFormat], str] | None = None
    # Extra option checks: (precision, fp16, static_batch) -> raise ConfigError.
    validate: Callable[[Precision, bool, int | None], None] | None = None
    standard_exports: tuple[Precision, ...] = ()  # what bench creates when missing (CPU targets)

    @property
    def int8(self) -> bool:
        return Precision.INT8 in self.precisions

    @property
    def fp16(self) -> bool:
        return Precision.FP16 in self.precisions

    @property
    def qat(self) -> bool:
        return Precision.QAT_INT8 in self.precisions

    def make_exporter(self):
        return resolve(self.exporter)()

    def open_engine(self, model_file: Path, *, precision: str | None = None, threads: int | None = None, cache=True):
        if self.engine is None:
            raise ConfigError(f"the {self.name} target has no engine")
        return resolve(self.engine)(Path(model_file), precision=precision, threads=threads, cache=cache)


def check_batch(batch: np.ndarray) -> np.ndarray:
    """Every engine's input check: a float32 (B, 1, S, S) batch, contiguous."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"expected a float32 batch (B, 1, S, S), got shape {batch.shape}")
    return batch


class Engine:
    """Base of the runtime engines (see the module docstring for the protocol)."""

    name = "engine"
    output_names: list[str]
    inference_precision: str | None = None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        """What this engine really executes, for drift.json, verify and bench: the runtime and the
        precision read back after compile (not the hint asked for)."""
        parts = [self.name]
        if self.inference_precision:
            parts.append(f"inference precision {self.inference_precision} (read back after compile)")
        return "; ".join(parts)
