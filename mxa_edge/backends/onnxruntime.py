"""Target ``onnx``: an ONNX model run by ONNX Runtime's CPU provider (FP32, or static INT8 QDQ).

The engine lives here (torch-free); the exporter is ``mxa_edge.torch_side.export.onnx_backend``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mxa_edge.backends.registry import register
from mxa_edge.backends.spec import BackendSpec, Engine, check_batch
from mxa_edge.formats.precision import Precision
from mxa_edge.support.errors import MissingDependencyError


class OrtEngine(Engine):
    name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from exc
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch):
        outs = self.session.run(self.output_names, {"image": check_batch(batch)})
        return dict(zip(self.output_names, outs))

    def describe(self) -> str:
        # ORT runs the file's own arithmetic; which providers it got is what can differ.
        return f"{self.name}; providers {', '.join(self.session.get_providers())}"


def open_ort(model_file: Path, *, precision=None, threads=None, cache=True) -> OrtEngine:
    # ONNX Runtime runs the file's own arithmetic: there is no precision hint to pass.
    return OrtEngine(model_file, threads)


ONNX = register(
    BackendSpec(
        name="onnx",
        runtime="onnxruntime",
        display="ONNX Runtime",
        files="model.onnx or model.int8.onnx",
        exporter="mxa_edge.torch_side.export.onnx_backend:OnnxExporter",
        engine=open_ort,
        precisions=(Precision.FP32, Precision.INT8, Precision.QAT_INT8),
        cpu=True,
        gpu=True,
        accuracy_control=True,
        order=10,
        standard_exports=(Precision.FP32, Precision.INT8),
    )
)
