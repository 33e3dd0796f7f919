"""Inference engines over a verified artifact (no torch): ONNX Runtime and OpenVINO.

``open_engine(artifact)`` picks the engine from ``artifact.backend``. Every engine takes a
float32 batch (B, 1, S, S) in the preprocess range and returns {output name: array}:
``logits`` plus ``roi``/``attention``/``attention_box`` when the model has MXA.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mxa_edge.errors import ArtifactError, ConfigError, MissingDependencyError

# OpenVINO precision names as the manifest stores them -> the hint value.
_OV_PRECISION = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


class Engine:
    name = "engine"
    output_names: list[str]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _check_batch(batch: np.ndarray) -> np.ndarray:
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"expected a float32 batch (B, 1, S, S), got shape {batch.shape}")
    return batch


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
        outs = self.session.run(self.output_names, {"image": _check_batch(batch)})
        return dict(zip(self.output_names, outs))


def openvino_cache_dir() -> Path | None:
    """Where compiled OpenVINO blobs are cached (``<mxa-edge cache>/openvino``), or None when it
    cannot be created or written (read-only home, sandbox): then every start compiles afresh.

    Safe to share between artifacts: OpenVINO keys a blob on the model file's path and the
    compile properties (precision hint included), and re-compiles (overwriting the blob) when
    the file's content no longer matches what the blob was built from.
    """
    from mxa_edge.paths import cache_dir

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
        self,
        model_path: Path,
        precision: str | None = "f32",
        threads: int | None = None,
        device="CPU",
        *,
        cache: bool = True,
    ):
        try:
            from mxa_edge.export._telemetry import disable_telemetry  # stdlib only

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
            if precision not in _OV_PRECISION:
                raise ArtifactError(f"unknown OpenVINO inference precision {precision!r} in the manifest")
            config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION[precision]
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
        batch = _check_batch(batch)
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


_DEFAULT = object()


def open_engine(artifact, threads: int | None = None, *, precision=_DEFAULT) -> Engine:
    """An engine for a loaded artifact (``mxa_edge.runtime.artifact.load_artifact``).

    OpenVINO compiles with the manifest's ``precision.inference_precision`` unless
    ``precision`` overrides it (None = the plugin's default; benchmarks use this).
    """
    backend = artifact.backend
    if backend == "onnxruntime":
        return OrtEngine(artifact.entry, threads)
    if backend == "openvino":
        p = artifact.precision.get("inference_precision", "f32") if precision is _DEFAULT else precision
        return OpenVinoEngine(artifact.entry, p, threads)
    if backend == "tensorrt":
        raise MissingDependencyError(
            f"{artifact.path}: a TensorRT artifact runs only where TensorRT and CUDA are installed "
            "(build the engine with the command in its BUILD_TRT.txt)"
        )
    raise ConfigError(f"{artifact.path}: unknown backend {backend!r} in the manifest")


def open_model_file(path, runtime: str, threads: int | None = None, precision: str | None = "f32") -> Engine:
    """An engine over a bare model file (the drift gate, before the manifest exists). No
    OpenVINO compile cache: these files live in temporary folders and are opened once."""
    if runtime == "onnxruntime":
        return OrtEngine(Path(path), threads)
    if runtime == "openvino":
        return OpenVinoEngine(Path(path), precision, threads, cache=False)
    raise ConfigError(f"no engine for runtime {runtime!r} here")
