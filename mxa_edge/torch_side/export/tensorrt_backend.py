"""TensorRT: explicit-quantization Q/DQ ONNX (int8) or the FP32 ONNX (fp16) + the build command.

TensorRT builds engines for one GPU on that GPU, so the portable artifact is the ONNX plus
the exact ``trtexec`` command. INT8 uses symmetric int8 Q/DQ on activations and weights
(TensorRT's explicit-quantization contract: zero points must be 0), per-channel weights,
biases left for TensorRT to fold; under the default ``Int8Scheme.PORTABLE`` weights use 7 bits,
so the Q/DQ graph the gate runs through ONNX Runtime (the CPU stand-in for TensorRT) computes
the same on every x86 CPU. When ``tensorrt`` imports and a CUDA device is present the
engine is built here too; otherwise the pipeline reports MissingDependencyError after the
ONNX and BUILD_TRT.txt are published.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.backends.spec import BackendOutput, ExportOptions
from mxa_edge.backends.tensorrt import BUILD_FILE, ENGINE_FILE, GATED_ON_ENGINE, GATED_ON_PROXY, tensorrt_status
from mxa_edge.formats.precision import NumericFormat
from mxa_edge.torch_side.export.onnx_graph import check_parity, export_onnx, quantize_onnx

QDQ_FILE = "model.qdq.onnx"
FP_FILE = "model.onnx"


def trtexec_command(onnx_name: str, image_size: int, *, int8: bool, fp16: bool, max_batch: int = 32) -> str:
    s = image_size
    flags = (" --int8" if int8 else "") + (" --fp16" if fp16 else "")
    return (
        f"trtexec --onnx={onnx_name} --saveEngine={ENGINE_FILE}{flags}"
        f" --minShapes=image:1x1x{s}x{s} --optShapes=image:8x1x{s}x{s} --maxShapes=image:{max_batch}x1x{s}x{s}"
    )


def build_engine(onnx_path: Path, engine_path: Path, image_size: int, *, int8: bool, fp16: bool) -> None:
    """Build a serialized engine with TensorRT's Python API (needs TensorRT + CUDA)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ: no calibrator needed
    s = image_size
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 1, s, s), (8, 1, s, s), (32, 1, s, s))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine")
    Path(engine_path).write_bytes(bytes(engine))


class TensorRtExporter:
    def available(self) -> tuple[bool, str]:
        # The ONNX and the build command are written without TensorRT; only the engine needs it.
        return True, ""

    def export(self, model, example, out_dir: Path, opts: ExportOptions) -> BackendOutput:
        # The spec's validate() has refused FP32: opts is INT8 and/or FP16 here.
        out_dir = Path(out_dir)
        size = int(example.shape[-1])
        fp = out_dir / FP_FILE
        export_onnx(model, example, fp)
        opts.notes["onnx_parity_max_abs"] = check_parity(model, fp, example)
        quant = None
        entry = FP_FILE
        if opts.int8:
            quant = quantize_onnx(
                fp,
                out_dir / QDQ_FILE,
                opts.calibration,
                opts.calib_method,
                symmetric=True,
                float_layers=opts.float_layers,
                scheme=opts.int8_scheme,
            )
            fp.unlink()
            entry = QDQ_FILE
        command = trtexec_command(entry, size, int8=opts.int8, fp16=opts.fp16)
        (out_dir / BUILD_FILE).write_text(
            "# Build the TensorRT engine on the deployment GPU (engines are specific to GPU and TensorRT version):\n"
            f"{command}\n"
        )
        files = [entry]
        ok, reason = tensorrt_status()
        if ok:
            build_engine(out_dir / entry, out_dir / ENGINE_FILE, size, int8=opts.int8, fp16=opts.fp16)
            files.append(ENGINE_FILE)
        precision = NumericFormat(
            "int8" if opts.int8 else "fp16",
            "int8" if opts.int8 else "fp16",
            ("int8+fp16" if opts.fp16 else "int8") if opts.int8 else "fp16",
        )
        return BackendOutput(
            files,
            precision,
            quant,
            # With TensorRT and CUDA here the gate runs the built engine itself. Without them it
            # runs the Q/DQ ONNX through ONNX Runtime (CPU): the quantization TensorRT must honour,
            # not TensorRT's kernels, and the manifest says so (FP16 is refused before any work).
            gate_file=entry,
            gate_runtime="tensorrt" if ok else "onnxruntime",
            extra={
                "trtexec": command,
                "build_file": BUILD_FILE,
                "engine_built": ok,
                "engine_missing_reason": reason or None,
                "gated_with": GATED_ON_ENGINE if ok else GATED_ON_PROXY,
            },
        )
