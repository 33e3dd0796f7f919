"""Export targets behind one interface (torch-free at import): ``BackendSpec`` + the registry.

Importing this package declares the built-in targets; their heavy halves (torch exporters,
ONNX Runtime, OpenVINO, TensorRT) load only when used.
"""

from mxa_edge.backends import onnxruntime as _onnxruntime  # noqa: F401  (declares "onnx")
from mxa_edge.backends import openvino as _openvino  # noqa: F401  (declares "openvino")
from mxa_edge.backends import tensorrt as _tensorrt  # noqa: F401  (declares "tensorrt")
from mxa_edge.backends.registry import all_specs, check_options, for_runtime, get, names, register, unregister
from mxa_edge.backends.spec import (
    CALIB_METHODS,
    BackendOutput,
    BackendSpec,
    BenchVariant,
    Engine,
    ExportOptions,
    check_batch,
)

__all__ = [
    "CALIB_METHODS",
    "BackendOutput",
    "BackendSpec",
    "BenchVariant",
    "Engine",
    "ExportOptions",
    "all_specs",
    "check_batch",
    "check_options",
    "for_runtime",
    "get",
    "names",
    "register",
    "unregister",
]
