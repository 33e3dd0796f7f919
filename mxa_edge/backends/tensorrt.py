"""Target ``tensorrt``: a Q/DQ ONNX (INT8) or the FP32 ONNX (FP16), plus the engine built on the
deployment GPU (``model.engine``). TensorRT builds engines for one GPU on that GPU, so the
portable artifact is the ONNX and the exact ``trtexec`` command; where TensorRT and CUDA exist
the engine is built at export and run by ``TensorRtEngine``.

Where they do not (this project's CPU machines), the drift gate runs the ONNX through ONNX
Runtime (``gate_runtime``) and every use of the engine fails with a clear message. The exporter
is ``mxa_edge.torch_side.export.tensorrt_backend``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mxa_edge.backends.registry import register
from mxa_edge.backends.spec import BackendSpec, Engine, check_batch
from mxa_edge.formats.precision import Precision
from mxa_edge.support.errors import ConfigError, MissingDependencyError

ENGINE_FILE = "model.engine"
BUILD_FILE = "BUILD_TRT.txt"
# The engine runner and builder use TensorRT 10's tensor-address API (set_tensor_address,
# execute_async_v3, build_serialized_network); TensorRT 8/9 lack it. Declared in the [gpu] extra.
TENSORRT_MAJOR = 10
# What the manifest, bench, report and verify say about the gate of a TensorRT artifact.
GATED_ON_ENGINE = "tensorrt engine (model.engine, on this GPU)"
GATED_ON_PROXY = "onnxruntime proxy of the Q/DQ graph (no TensorRT/CUDA at export; the engine itself was never run)"


def _cudart():
    """CUDA's runtime API from cuda-python (``cuda-bindings``), the way TensorRT's own Python samples
    allocate and copy: the engine needs device memory and a stream, not a deep-learning framework."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-bindings >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result, what: str):
    """cuda-python returns (error, *values): raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    cudart = _cudart()
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


def tensorrt_status() -> tuple[bool, str]:
    """(TensorRT and a CUDA device are usable here, why not), importing nothing heavy."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed"
    try:
        from importlib import metadata

        version = metadata.version("tensorrt")
    except Exception:  # a source build without metadata: let the import decide
        version = None
    if version and int(version.split(".")[0]) != TENSORRT_MAJOR:
        return False, f"TensorRT {version} is installed; mxa-edge needs TensorRT {TENSORRT_MAJOR}.x"
    try:
        cudart = _cudart()
    except ImportError:
        return False, "cuda-python is not installed (pip install 'mxa-edge[gpu]')"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return False, "no CUDA device"
    return True, ""


class _DeviceBuffer:
    """One tensor in device memory (cudaMalloc), freed with its owner."""

    def __init__(self, shape: tuple, dtype: np.dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.ptr = int(_check(_cudart().cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def upload(self, host: np.ndarray) -> None:
        cudart = _cudart()
        host = np.ascontiguousarray(host, self.dtype)
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(cudart.cudaMemcpy(self.ptr, host.ctypes.data, self.nbytes, kind), "copy to the GPU")

    def download(self) -> np.ndarray:
        cudart = _cudart()
        host = np.empty(self.shape, self.dtype)
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpy(host.ctypes.data, self.ptr, self.nbytes, kind), "copy from the GPU")
        return host

    def __del__(self):
        try:
            _cudart().cudaFree(self.ptr)
        except Exception:  # interpreter shutdown: the driver frees it with the context
            pass


class TensorRtEngine(Engine):
    """Runs a serialized TensorRT engine (TensorRT 10 tensor-address API) on cudaMalloc buffers."""

    name = "tensorrt"

    def __init__(self, engine_path: Path):
        ok, why = tensorrt_status()
        if not ok:
            raise MissingDependencyError(
                f"{engine_path.parent}: a TensorRT artifact runs only where TensorRT and CUDA are installed ({why})"
            )
        if not engine_path.is_file():
            raise MissingDependencyError(
                f"{engine_path.parent}: no {ENGINE_FILE}; build it on the GPU machine with the command in {BUILD_FILE}"
            )
        import tensorrt as trt

        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = _check(_cudart().cudaStreamCreate(), "cudaStreamCreate")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.engine_path = engine_path

    def bind(self, batch: np.ndarray):
        """Input and output buffers on the GPU for ``batch``; returns ``run() -> {name: device buffer}``
        (bench times this, without the host copies)."""
        trt, ctx = self._trt, self.context
        batch = check_batch(batch)
        inp = _DeviceBuffer(batch.shape, batch.dtype)
        inp.upload(batch)
        ctx.set_input_shape("image", batch.shape)
        bufs = {
            n: _DeviceBuffer(tuple(ctx.get_tensor_shape(n)), trt.nptype(self.engine.get_tensor_dtype(n)))
            for n in self.output_names
        }

        def run():
            ctx.set_input_shape("image", batch.shape)
            ctx.set_tensor_address("image", inp.ptr)
            for n, b in bufs.items():
                ctx.set_tensor_address(n, b.ptr)
            ctx.execute_async_v3(int(self.stream))
            _check(_cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            return bufs

        run.buffers = (inp, bufs)  # kept alive as long as run is
        return run

    def run(self, batch):
        return {k: v.download().astype(np.float32) for k, v in self.bind(batch)().items()}

    def describe(self) -> str:
        return f"tensorrt {self._trt.__version__}; {self.engine_path.name} (precisions fixed when it was built)"


def open_tensorrt(model_file: Path, *, precision=None, threads=None, cache=True) -> TensorRtEngine:
    # The artifact's entry is the ONNX the engine was built from; the engine sits beside it.
    return TensorRtEngine(Path(model_file).with_name(ENGINE_FILE))


def _needs_reduced_precision(precision: Precision, fp16: bool, static_batch) -> None:
    if not (precision.int8 or fp16):
        raise ConfigError("the tensorrt target needs --int8 or --fp16 (FP32 TensorRT gains nothing over ONNX Runtime)")
    if precision.qat:
        raise ConfigError(
            "--qat exports to onnx or openvino; TensorRT wants symmetric Q/DQ, use --target tensorrt --int8"
        )
    if fp16:
        ok, why = tensorrt_status()
        if not ok:
            # FP16 has no execution path here: ONNX Runtime on a CPU would run the FP32 graph, so
            # a gate here would compare FP32 with FP32 and could not fail. It never reports PASS.
            raise MissingDependencyError(
                f"--target tensorrt --fp16 can be drift-gated only where TensorRT and CUDA run the FP16 engine "
                f"({why}); export it on the GPU machine (--int8 alone is gated here through ONNX Runtime's Q/DQ)"
            )


TENSORRT = register(
    BackendSpec(
        name="tensorrt",
        runtime="tensorrt",
        display="TensorRT",
        files="model.qdq.onnx or model.onnx (+ model.engine)",
        exporter="mxa_edge.torch_side.export.tensorrt_backend:TensorRtExporter",
        engine=open_tensorrt,
        precisions=(Precision.FP16, Precision.INT8),
        cpu=False,
        gpu=True,
        gate_runtime="onnxruntime",
        int8_with_fp16=True,
        order=30,
        validate=_needs_reduced_precision,
    )
)
