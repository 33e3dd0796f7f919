"""Exporter for target ``onnx`` (ONNX Runtime): FP32 ONNX, static INT8 QDQ, or a QAT model as QDQ.

The graph work is ``onnx_graph``; the engine is ``mxa_edge.backends.onnxruntime``.
"""

from __future__ import annotations

from pathlib import Path

from mxa_edge.backends.spec import BackendOutput, ExportOptions
from mxa_edge.errors import ConfigError
from mxa_edge.export.onnx_graph import check_parity, export_onnx, int8_weight_extent, quantize_onnx
from mxa_edge.formats.precision import FP32, NumericFormat

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_FORMAT = NumericFormat("int8", "uint8", "int8")
# Accuracy control: at most this many re-quantizations, each returning twice as many of the
# most sensitive layers to float as the last (2, 4, 8, ...): about 15 s each on the default run.
AC_MAX_ITERATIONS = 6
AC_FIRST_STEP = 2


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
        """INT8 retry after ``first`` failed the drift gate. ONNX Runtime has no accuracy-control
        tool of its own (NNCF's works on OpenVINO models), so this is the same idea, bounded:
        return the most sensitive layers of the label-free ranking (``sensitivity``; computed
        before any gate ran) to float, 2, 4, 8, ... more at a time, re-quantize, and score each
        candidate with the gate's own score (``gate.gate_score``) on ``validation``, the run's
        TUNING split; stop at the first that passes there (or after AC_MAX_ITERATIONS, keeping
        the last). The held-out gate then decides, as for every export."""
        from mxa_edge import gate
        from mxa_edge.runtime.engines import open_model_file
        from mxa_edge.scoring import engine_runner, score

        images, targets, mask, decision = validation
        tune_score = gate.gate_score(targets, mask, prob_ref, gate_spec, thresholds=decision.threshold_array())

        def on_tune(path: Path) -> float:
            engine = open_model_file(path, "onnxruntime", precision=INT8_FORMAT.inference_precision)
            logits = score(engine_runner(engine), images, outputs=("logits",))["logits"]
            return float(tune_score(decision.probabilities(logits)))

        out_dir = Path(out_dir)
        fp32 = out_dir / "_fp32.onnx"
        export_onnx(model, example, fp32)
        history = [{"float_layers_added": 0, "tune_gate_score": on_tune(out_dir / INT8_FILE)}]
        candidates = [name for name in opts.layer_ranking if name not in opts.float_layers]
        candidate = out_dir / "_candidate.int8.onnx"
        quant, added, step = first.quantization, [], AC_FIRST_STEP
        for _ in range(AC_MAX_ITERATIONS):
            if len(added) >= len(candidates):
                break
            added = candidates[: len(added) + step]
            step *= 2
            quant = quantize_onnx(
                fp32,
                candidate,
                opts.calibration,
                opts.calib_method,
                float_layers=[*opts.float_layers, *added],
                scheme=opts.int8_scheme,
            )
            history.append({"float_layers_added": len(added), "tune_gate_score": on_tune(candidate)})
            if history[-1]["tune_gate_score"] >= 0:
                break
        fp32.unlink()
        if added:
            candidate.replace(out_dir / INT8_FILE)
        quant = dict(quant)
        quant["accuracy_control"] = {
            "tool": "mxa-edge: layers returned to float in sensitivity order, gate score in the loop",
            "metric": "gate v2 score (mxa_edge.gate.gate_score): 1 + the smallest headroom over every check; "
            "passes at >= 0",
            "split": "tune",  # fitted here; the published verdict is the held-out gate's
            "n_images": int(len(images)),
            "gate": gate_spec.to_dict(),
            "max_iterations": AC_MAX_ITERATIONS,
            "history": history,
            "reverted_to_float": added,
        }
        return BackendOutput([INT8_FILE], INT8_FORMAT, quant)

    def export_qat(self, qmodel, example, out_dir: Path) -> BackendOutput:
        """The QAT model as ONNX QuantizeLinear/DequantizeLinear, weights folded to int8."""
        from mxa_edge.export.qat import fold_weight_quantizers, qat_logits_max_diff, set_export_mode

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
