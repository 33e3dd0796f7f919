"""The one small interface every export backend implements, and the capability table.

A backend turns a fused FP32 torch model into model file(s) in a folder, optionally
quantized from a calibration set. Orchestration (calibration, drift gate, manifest,
atomic publish) lives in ``pipeline.py``; backends never write manifests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class ExportOptions:
    int8: bool = False
    fp16: bool = False
    calib_method: str = "minmax"
    calibration: np.ndarray | None = None  # float32 (N, 1, S, S) in the model's range
    seed: int = 0
    # Torch module names kept in float in an INT8 export (sensitivity.choose_float_layers).
    float_layers: list[str] = field(default_factory=list)
    # Filled in by the backend for the manifest.
    notes: dict = field(default_factory=dict)


@dataclass
class BackendOutput:
    files: list[str]  # model files written, relative to out_dir; files[0] is the entry
    runtime: str  # "onnxruntime" / "openvino" / "tensorrt": which engine runs the artifact
    precision: dict  # {weights, activations, inference_precision}
    quantization: dict | None
    # The model the drift gate runs, when it differs from the entry (TensorRT: the Q/DQ ONNX
    # through ONNX Runtime, because no engine can be built here).
    gate_file: str | None = None
    gate_runtime: str | None = None
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    name: str  # target name on the command line
    suffix: str  # main model file suffix

    def available(self) -> tuple[bool, str]:
        """(usable here, reason when not)."""

    def export(self, model, example, out_dir: Path, opts: ExportOptions) -> BackendOutput:
        """Write model file(s) for ``model`` (fused, eval) into ``out_dir``."""


@dataclass(frozen=True)
class Capability:
    name: str
    files: str
    cpu: bool
    gpu: bool
    int8: bool
    fp16: bool
    runtime: str


CAPABILITIES: tuple[Capability, ...] = (
    Capability("onnx", "model.onnx", cpu=True, gpu=True, int8=True, fp16=False, runtime="onnxruntime"),
    Capability("openvino", "model.xml + model.bin", cpu=True, gpu=True, int8=True, fp16=True, runtime="openvino"),
    # GPU only; built from a Q/DQ ONNX (int8) or the FP32 ONNX (fp16) on the target machine.
    Capability(
        "tensorrt",
        "model.qdq.onnx or model.onnx (+ model.engine)",
        cpu=False,
        gpu=True,
        int8=True,
        fp16=True,
        runtime="tensorrt",
    ),
)


def get_backend(name: str) -> Backend:
    from mxa_edge.errors import ConfigError

    if name == "onnx":
        from mxa_edge.export.onnx_backend import OnnxBackend

        return OnnxBackend()
    if name == "openvino":
        from mxa_edge.export.openvino_backend import OpenVinoBackend

        return OpenVinoBackend()
    if name == "tensorrt":
        from mxa_edge.export.tensorrt_backend import TensorRtBackend

        return TensorRtBackend()
    raise ConfigError(f"unknown export target {name!r}; expected one of {', '.join(c.name for c in CAPABILITIES)}")
