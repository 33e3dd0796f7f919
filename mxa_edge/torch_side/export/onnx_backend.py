"""Exporter for target ``onnx`` (ONNX Runtime): FP32 ONNX, static INT8 QDQ, or a QAT model as QDQ.

The graph work is ``onnx_graph``; the engine is ``mxa_edge.backends.onnxruntime``.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.backends.spec import BackendOutput, ExportOptions
from mxa_edge.formats.precision import FP32, NumericFormat
from mxa_edge.support.errors import ConfigError
from mxa_edge.torch_side.export.accuracy_control import restore_float_layers
from mxa_edge.torch_side.export.onnx_graph import check_parity, export_onnx, int8_weight_extent, quantize_onnx
from mxa_edge.torch_side.export.qat import fold_weight_quantizers, qat_logits_max_diff, set_export_mode

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_FORMAT = NumericFormat("int8", "uint8", "int8")


class OnnxExporter:
    def available(self) -> tuple[bool, str]:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return False, f"onnx/onnxruntime not installed ({exc})"
        return True, ""

    def export(self, model, example, out_dir: Path, opts: ExportOptions) -> BackendOutput:
        if opts.fp16:
            raise ConfigError("the onnx target has no fp16 option here; use --target openvino or tensorrt for fp16")
        out_dir = Path(out_dir)
        fp32 = out_dir / FP32_FILE
        export_onnx(model, example, fp32)
        opts.notes["onnx_parity_max_abs"] = check_parity(model, fp32, example)
        if not opts.int8:
            return BackendOutput([FP32_FILE], FP32)
        quant = quantize_onnx(
            fp32,
            out_dir / INT8_FILE,
            opts.calibration,
            opts.calib_method,
            float_layers=opts.float_layers,
            scheme=opts.int8_scheme,
        )
        fp32.unlink()  # the artifact ships one model; the FP32 reference is the run itself
        return BackendOutput([INT8_FILE], INT8_FORMAT, quant)

    def export_with_accuracy_control(
        self, model, example, out_dir: Path, opts: ExportOptions, validation, gate_spec, prob_ref, first: BackendOutput
    ) -> BackendOutput:
        """INT8 retry after ``first`` failed the drift gate (``accuracy_control``: the most
        sensitive layers back to float, the gate's score on the tuning split in the loop)."""

        out_dir = Path(out_dir)
        fp32, candidate = out_dir / "_fp32.onnx", out_dir / "_candidate.int8.onnx"
        export_onnx(model, example, fp32)

        def requantize(extra: list[str]):
            layers = [*opts.float_layers, *extra]
            settings = quantize_onnx(
                fp32, candidate, opts.calibration, opts.calib_method, float_layers=layers, scheme=opts.int8_scheme
            )
            return candidate, settings

        path, quant, record = restore_float_layers(
            out_dir / INT8_FILE,
            requantize,
            opts=opts,
            validation=validation,
            gate_spec=gate_spec,
            prob_ref=prob_ref,
            runtime="onnxruntime",
            precision=INT8_FORMAT.inference_precision,
        )
        fp32.unlink()
        if path is not None:
            path.replace(out_dir / INT8_FILE)
        return BackendOutput([INT8_FILE], INT8_FORMAT, {**(quant or first.quantization), "accuracy_control": record})

    def export_qat(self, qmodel, example, out_dir: Path) -> BackendOutput:
        """The QAT model as ONNX QuantizeLinear/DequantizeLinear, weights folded to int8."""

        out_dir = Path(out_dir)
        n = set_export_mode(qmodel, "qdq")
        export_onnx(qmodel, example, out_dir / INT8_FILE, equivalent=False)  # NNCF hooks the original modules
        folded = fold_weight_quantizers(out_dir / INT8_FILE)
        diff = qat_logits_max_diff(qmodel, out_dir / INT8_FILE, example, "onnxruntime")
        quant = {
            "tool": "nncf QAT, exported as ONNX QuantizeLinear/DequantizeLinear",
            "format": "QDQ",
            "n_quantizers": n,
            "int8_weight_initializers": folded,
            "max_abs_int8_weight": int8_weight_extent(out_dir / INT8_FILE),
            "export_vs_torch_max_abs": diff,
        }
        return BackendOutput([INT8_FILE], INT8_FORMAT, quant)
