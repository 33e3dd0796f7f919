"""Target ``openvino``: an OpenVINO IR (f32, f16, or NNCF INT8) run by OpenVINO's CPU plugin.

The engine lives here (torch-free); the exporter is ``mxa_edge.torch_side.export.openvino_backend``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mxa_edge.backends.registry import register
from mxa_edge.backends.spec import BackendSpec, BenchVariant, Engine, check_batch
from mxa_edge.formats.precision import NumericFormat, Precision
from mxa_edge.support.errors import ArtifactError, MissingDependencyError
from mxa_edge.support.paths import cache_dir

# OpenVINO precision names as the manifest stores them -> the hint value.
HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def openvino_cache_dir() -> Path | None:
    """Where compiled OpenVINO blobs are cached (``<mxa-edge cache>/openvino``), or None when it
    cannot be created or written (read-only home, sandbox): then every start compiles afresh.

    Safe to share between artifacts: OpenVINO keys a blob on the model file's path and the
    compile properties (precision hint included), and re-compiles (overwriting the blob) when
    the file's content no longer matches what the blob was built from.
    """

    try:
        d = cache_dir() / "openvino"
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return d if os.access(d, os.W_OK | os.X_OK) else None


class OpenVinoEngine(Engine):
    """``cache=True`` compiles through OpenVINO's model cache (``openvino_cache_dir``): the
    INT8 model of the default run compiles in ~1.5 s the first time, ~0.3 s after.

    The engine compiles the IR as it is: a dynamic batch axis by default, or the batch fixed
    at export (``mxa-edge export --static-batch N``, ``fix_ir_batch``), which the drift gate
    checked. It never reshapes at load time: for INT8 IRs OpenVINO may compile different
    arithmetic once the shape is fixed (identical logits on the default run's INT8, 0.015
    apart on the 64 px test model), and read + reshape + compile doubles the cold start of a
    one-image ``predict`` (0.53 s -> 1.0 s).
    """

    name = "openvino"

    def __init__(
        self, model_path: Path, precision: str | None = "f32", threads: int | None = None, device="CPU", *, cache=True
    ):
        try:
            from mxa_edge.support.telemetry import disable_telemetry  # stdlib only

            disable_telemetry()
            import openvino as ov
        except ImportError as exc:
            raise MissingDependencyError(f"openvino is not installed ({exc}); pip install openvino") from exc
        core = ov.Core()
        self.cache_dir = openvino_cache_dir() if cache else None
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        config = {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads or os.cpu_count() or 1)}
        if precision is not None:  # None = the plugin's default (bf16 on bf16-capable CPUs)
            if precision not in HINTS:
                raise ArtifactError(f"unknown OpenVINO inference precision {precision!r} in the manifest")
            config["INFERENCE_PRECISION_HINT"] = HINTS[precision]
        # From the file path (not a read_model object) so a cache hit skips reading and compiling.
        self.compiled = core.compile_model(str(model_path), device, config)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.loaded_from_cache = bool(self.cache_dir is not None and self.compiled.get_property("LOADED_FROM_CACHE"))
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        dim = self.compiled.inputs[0].get_partial_shape()[0]
        # An IR exported with --static-batch N takes exactly N images per call.
        self.fixed_batch = dim.get_length() if dim.is_static else None

    def _infer(self, batch):
        res = self.request.infer({0: batch})
        return {name: np.asarray(res[out]) for name, out in zip(self.output_names, self.compiled.outputs)}

    def run(self, batch):
        batch = check_batch(batch)
        n = self.fixed_batch
        if n is None or len(batch) == n:
            return self._infer(batch)
        # Fixed-batch IR: chunks of n, the last one zero-padded (images are independent at
        # inference: no batch statistics), padding rows dropped from the outputs.
        parts = []
        for i in range(0, len(batch), n):
            chunk = batch[i : i + n]
            if len(chunk) < n:
                chunk = np.concatenate([chunk, np.zeros((n - len(chunk), *batch.shape[1:]), np.float32)])
            parts.append(self._infer(chunk))
        return {k: np.concatenate([p[k] for p in parts])[: len(batch)] for k in self.output_names}


def open_openvino(model_file: Path, *, precision="f32", threads=None, cache=True) -> OpenVinoEngine:
    return OpenVinoEngine(model_file, precision, threads, cache=cache)


def cpu_default_row(numeric: NumericFormat) -> list[BenchVariant]:
    """An FP32 IR is also timed at the CPU's default precision (bf16 where the CPU has it)."""
    if numeric.weights != "fp32":
        return []
    return [
        BenchVariant(
            key="default",
            label="CPU default",
            compute="bf16",
            precision_override=None,
            note="same IR compiled without a precision hint; AUC is the f32 gate's (this precision was not gated)",
        )
    ]


OPENVINO = register(
    BackendSpec(
        name="openvino",
        runtime="openvino",
        display="OpenVINO",
        files="model.xml + model.bin",
        exporter="mxa_edge.torch_side.export.openvino_backend:OpenVinoExporter",
        engine=open_openvino,
        precisions=(Precision.FP32, Precision.FP16, Precision.INT8, Precision.QAT_INT8),
        cpu=True,
        gpu=True,
        static_batch=True,
        accuracy_control=True,
        order=20,
        bench_variants=cpu_default_row,
        bench_label=lambda numeric: f" ({numeric.inference_precision} hint)",
        standard_exports=(Precision.FP32, Precision.INT8),
    )
)
