"""OpenVINO IR export (from the FP32 ONNX) and NNCF post-training INT8.

Precision: on CPUs with AVX-512 BF16/AMX, OpenVINO runs an "FP32" IR in bf16 unless
``INFERENCE_PRECISION_HINT`` says otherwise. The artifact records the hint it was checked
with (f32 for the FP32 IR) and the runtime engine compiles with exactly that hint, so the
drift gate and deployment run the same arithmetic.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from mxa_edge.backends.spec import BackendOutput, ExportOptions
from mxa_edge.formats.precision import Int8Scheme, NumericFormat
from mxa_edge.support.errors import ConfigError
from mxa_edge.support.telemetry import disable_telemetry
from mxa_edge.torch_side.export.accuracy_control import restore_float_layers
from mxa_edge.torch_side.export.onnx_graph import check_parity, export_onnx
from mxa_edge.torch_side.export.qat import qat_logits_max_diff, set_export_mode
from mxa_edge.torch_side.export.sensitivity import float_node_names

XML = "model.xml"
BIN = "model.bin"

# Op friendly names keep the ONNX scopes (/backbone/.../mixer/mxa/...). Kept in float: the
# whole MXA block (the ROI predictor and the sampling grid for precision, the CBAM gates
# because their tensors are too small for int8 to pay; see onnx_graph.sensitive_nodes).
# Softmax is ignored by type.
IGNORED_PATTERNS = (r".*/mxa/.*",)
IGNORED_TYPES = ("Softmax",)


def _nncf_dataset(images: np.ndarray, batch: int = 1):
    import nncf

    # NNCF collects statistics per item; batch 1 keeps min/max statistics per image.
    items = [np.ascontiguousarray(images[i : i + batch], dtype=np.float32) for i in range(0, len(images), batch)]
    return nncf.Dataset(items)


def float_patterns(onnx_nodes) -> list[str]:
    """IgnoredScope patterns for ONNX Conv/Gemm/MatMul node names: OpenVINO keeps the node
    name on the bias Add and names the convolution itself ``<node>/WithoutBiases``."""
    import re

    return ["^" + re.escape(name) + "(/.*)?$" for name in onnx_nodes]


def quantize_ir(
    ov_model,
    calibration: np.ndarray,
    method: str,
    *,
    model_type: str | None = "transformer",
    seed: int = 0,
    float_nodes=(),
    scheme: Int8Scheme = Int8Scheme.PORTABLE,
):
    """NNCF PTQ of an OpenVINO model; returns (quantized model, settings for the manifest).

    ``scheme`` PORTABLE sets NNCF's ``overflow_fix`` on every layer (its default covers the
    first layer only): weights get 7 bits of precision laid out so that oneDNN's non-VNNI
    int8 kernels, which halve the weights to keep ``VPMADDUBSW`` from saturating, lose
    nothing; the IR then computes the same on AVX2 and on VNNI CPUs (``Int8Scheme``).

    ``method`` maps onto NNCF's range estimators: minmax -> MinMax (NNCF's default for
    activations is a mean of per-batch min/max, which is close), percentile -> quantile
    estimators, entropy has no NNCF equivalent and uses the default (recorded as such).

    Why these settings (batch-1 latency vs the f32 IR, 2 threads, interleaved medians as in
    benchmarks/export_speed.py): ``model_type=None`` (NNCF's CNN
    rules) crashes in NNCF's quantizer propagation on the windowed attention (KeyError on a
    Gather); TRANSFORMER keeps Softmax in float by itself, so dropping it from the ignored
    types changes nothing; PERFORMANCE (symmetric activations) is no faster than MIXED
    (M0/128 0.99x vs 0.95x, M5/224 1.52x vs 1.49x) and drifted more on M5/224.
    ``float_nodes``: ONNX node names of the layers the sensitivity analysis keeps in float.
    """
    disable_telemetry()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    estimator = _estimator(method)
    advanced = AdvancedQuantizationParameters(overflow_fix=overflow_fix(scheme))
    if estimator is not None:
        advanced.activations_range_estimator_params = estimator
    patterns = list(IGNORED_PATTERNS) + float_patterns(float_nodes)
    scope = nncf.IgnoredScope(patterns=patterns, types=list(IGNORED_TYPES), validate=False)
    mtype = nncf.ModelType.TRANSFORMER if model_type == "transformer" else None
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout carries --json results
        quantized = nncf.quantize(
            ov_model,
            _nncf_dataset(calibration),
            subset_size=len(calibration),
            model_type=mtype,
            ignored_scope=scope,
            advanced_parameters=advanced,
            preset=nncf.QuantizationPreset.MIXED,
        )
    settings = {
        "tool": f"nncf.quantize {nncf.__version__}",
        "method": method if method != "entropy" else "entropy (no NNCF equivalent: default estimator)",
        "per_channel": True,
        "preset": "mixed (symmetric weights, asymmetric activations)",
        "int8_scheme": scheme.value,
        "overflow_fix": str(overflow_fix(scheme).value),
        "model_type": model_type,
        "ignored_patterns": list(IGNORED_PATTERNS),
        "ignored_types": list(IGNORED_TYPES),
        "float_nodes": sorted(float_nodes),
        "n_calibration": int(len(calibration)),
    }
    return quantized, settings


def overflow_fix(scheme: Int8Scheme):
    """NNCF's overflow fix for an ``Int8Scheme``: every layer (portable) or NNCF's default, the
    first layer only (vnni)."""
    from nncf.quantization.advanced_parameters import OverflowFix

    return OverflowFix.ENABLE if scheme is Int8Scheme.PORTABLE else OverflowFix.FIRST_LAYER


def quantized_ops(ov_model) -> set[str]:
    """Friendly names of the ops fed by a FakeQuantize (what runs in INT8)."""
    names = set()
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            for target in op.output(0).get_target_inputs():
                names.add(target.get_node().get_friendly_name())
    return names


def _estimator(method: str):
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in ("minmax", "entropy", "percentile"):
        raise ConfigError(f"unknown calibration method {method!r}")
    if method == "minmax":
        return RangeEstimatorParametersSet.MINMAX
    if method == "percentile":
        return _quantile_estimator()
    return None


def _quantile_estimator():
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    return RangeEstimatorParameters(
        min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=1e-4),
        max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=1e-4),
    )


def fix_ir_batch(xml_path: Path, batch: int) -> int:
    """Rewrite the IR at ``xml_path`` (and its .bin) with the input's batch fixed at ``batch``.

    Why: OpenVINO's dynamic-shape path re-infers shapes in each of the ~1,450 nodes of the
    default run's model on every call; fixed, the f32 IR runs 1.66x and the INT8 IR 1.55x
    faster at batch 1 (M0 128 px, 2 threads). Done on the file rather than at load time
    because for INT8 IRs OpenVINO may compile different arithmetic once the shape is fixed
    (logits 0.015 apart on the 64 px test model): the drift gate must check the fixed model,
    and compiling from the file keeps the cold start and the compile cache as they are."""
    disable_telemetry()
    import openvino as ov

    xml_path = Path(xml_path)
    model = ov.Core().read_model(str(xml_path))
    shape = model.inputs[0].get_partial_shape()
    shape[0] = int(batch)
    model.reshape({0: shape})
    tmp = xml_path.with_name("_static" + xml_path.name)
    ov.save_model(model, str(tmp), compress_to_fp16=False)  # weights stay as they were stored
    del model
    os.replace(tmp.with_suffix(".bin"), xml_path.with_suffix(".bin"))
    os.replace(tmp, xml_path)
    return int(batch)


def sensitive_ops_in_float(ov_model) -> list[str]:
    """The MXA blocks (their scope, ``.../mixer/mxa``) none of whose ops reads a FakeQuantize
    output: box, sampling grid (GridSample's, or the export-only interpolation matrices) and
    CBAM gates all in float (a check; the manifest's ``grid_inputs_in_float``)."""
    scopes, quantized = set(), set()
    for op in ov_model.get_ordered_ops():
        name = op.get_friendly_name()
        if "/mxa/" not in name:
            continue
        scope = name.split("/mxa/")[0] + "/mxa"
        scopes.add(scope)
        sources = [i.get_source_output().get_node().get_type_name() for i in op.inputs()]
        if op.get_type_name() == "FakeQuantize" or "FakeQuantize" in sources:
            quantized.add(scope)
    return sorted(scopes - quantized)


INT8_FORMAT = NumericFormat("int8", "int8", "f32")


class OpenVinoExporter:
    def available(self) -> tuple[bool, str]:
        try:
            disable_telemetry()
            import openvino  # noqa: F401
        except ImportError as exc:
            return False, f"openvino not installed ({exc})"
        return True, ""

    def export(self, model, example, out_dir: Path, opts: ExportOptions) -> BackendOutput:
        disable_telemetry()
        import openvino as ov

        out_dir = Path(out_dir)
        onnx_path = out_dir / "_fp32.onnx"
        export_onnx(model, example, onnx_path)
        opts.notes["onnx_parity_max_abs"] = check_parity(model, onnx_path, example)
        # read_model (the C++ frontend) rather than convert_model: same IR, and the Python
        # conversion tool is the part that starts telemetry sessions.
        ov_model = ov.Core().read_model(str(onnx_path))
        if opts.int8:
            from mxa_edge.torch_side.export.sensitivity import float_node_names

            ov_model, quant = quantize_ir(
                ov_model,
                opts.calibration,
                opts.calib_method,
                seed=opts.seed,
                float_nodes=float_node_names(onnx_path, opts.float_layers),
                scheme=opts.int8_scheme,
            )
            quant["grid_inputs_in_float"] = sensitive_ops_in_float(ov_model)
            precision = INT8_FORMAT
        elif opts.fp16:
            quant = None
            precision = NumericFormat("fp16", "fp16", "f16")
        else:
            quant = None
            precision = NumericFormat("fp32", "fp32", "f32")
        # compress_to_fp16 defaults to True in save_model: only the fp16 artifact wants it.
        ov.save_model(ov_model, str(out_dir / XML), compress_to_fp16=opts.fp16)
        onnx_path.unlink()
        return BackendOutput([XML, BIN], precision, quant)

    def fix_batch(self, entry: Path, batch: int) -> int:
        return fix_ir_batch(entry, batch)

    def export_qat(self, qmodel, example, out_dir: Path) -> BackendOutput:
        """The QAT model as an OpenVINO IR with FakeQuantize ops (NNCF's native export, which
        OpenVINO reads exactly); weight FakeQuantize folded to int8 constants."""
        disable_telemetry()
        import openvino as ov
        from openvino._offline_transformations import compress_quantize_weights_transformation

        out_dir = Path(out_dir)
        n = set_export_mode(qmodel, "fq")
        onnx_path = out_dir / "_qat.onnx"
        # FakeQuantize in OpenVINO's ONNX domain; NNCF hooks the original modules: no export-only swap
        export_onnx(qmodel, example, onnx_path, equivalent=False)
        ov_model = ov.Core().read_model(str(onnx_path))
        # Weight FakeQuantize -> int8 constants (what NNCF's own PTQ writes): a 4x smaller .bin.
        compress_quantize_weights_transformation(ov_model)
        ov.save_model(ov_model, str(out_dir / XML), compress_to_fp16=False)
        onnx_path.unlink()
        diff = qat_logits_max_diff(qmodel, out_dir / XML, example, "openvino")
        quant = {
            "tool": "nncf QAT, exported as OpenVINO FakeQuantize",
            "n_quantizers": n,
            "grid_inputs_in_float": sensitive_ops_in_float(ov.Core().read_model(str(out_dir / XML))),
            "export_vs_torch_max_abs": diff,
        }
        return BackendOutput([XML, BIN], INT8_FORMAT, quant)

    def export_with_accuracy_control(
        self,
        model,
        example,
        out_dir: Path,
        opts: ExportOptions,
        validation,
        gate_spec,
        prob_ref: np.ndarray,
        first: BackendOutput,
    ) -> BackendOutput:
        """INT8 retry after ``first`` (this backend's plain INT8 export, still in ``out_dir``)
        failed the drift gate: the most sensitive layers back to float with the gate's score on
        the tuning split in the loop (``accuracy_control``); the manifest lists the ops that
        left INT8."""

        disable_telemetry()
        import openvino as ov

        out_dir = Path(out_dir)
        onnx_path, candidate = out_dir / "_fp32.onnx", out_dir / "_candidate.xml"
        export_onnx(model, example, onnx_path)
        plain = ov.Core().read_model(str(out_dir / XML))
        kept = {}

        def requantize(extra: list[str]):
            quantized, settings = quantize_ir(
                ov.Core().read_model(str(onnx_path)),
                opts.calibration,
                opts.calib_method,
                seed=opts.seed,
                float_nodes=float_node_names(onnx_path, [*opts.float_layers, *extra]),
                scheme=opts.int8_scheme,
            )
            ov.save_model(quantized, str(candidate), compress_to_fp16=False)
            kept["model"] = quantized
            return candidate, settings

        path, quant, record = restore_float_layers(
            out_dir / XML,
            requantize,
            opts=opts,
            validation=validation,
            gate_spec=gate_spec,
            prob_ref=prob_ref,
            runtime="openvino",
            precision=INT8_FORMAT.inference_precision,
        )
        onnx_path.unlink()
        quant = dict(quant or first.quantization)
        if path is not None:
            record["reverted_ops"] = sorted(quantized_ops(plain) - quantized_ops(kept["model"]))
            quant["grid_inputs_in_float"] = sensitive_ops_in_float(kept["model"])
            for name in (XML, BIN):
                (out_dir / name).unlink(missing_ok=True)
            os.replace(candidate, out_dir / XML)
            os.replace(candidate.with_suffix(".bin"), out_dir / BIN)
        quant["accuracy_control"] = record
        return BackendOutput([XML, BIN], INT8_FORMAT, quant)
