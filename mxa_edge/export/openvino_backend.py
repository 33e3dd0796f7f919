"""OpenVINO IR export (from the FP32 ONNX) and NNCF post-training INT8.

Precision: on CPUs with AVX-512 BF16/AMX, OpenVINO runs an "FP32" IR in bf16 unless
``INFERENCE_PRECISION_HINT`` says otherwise. The artifact records the hint it was checked
with (f32 for the FP32 IR) and the runtime engine compiles with exactly that hint, so the
drift gate and deployment run the same arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mxa_edge.errors import ConfigError
from mxa_edge.export._telemetry import disable_telemetry
from mxa_edge.export.base import BackendOutput, ExportOptions
from mxa_edge.export.onnx_backend import check_parity, export_onnx

XML = "model.xml"
BIN = "model.bin"

# Op friendly names keep the ONNX scopes (/backbone/.../mixer/mxa/...). Kept in float:
# the ROI predictor, ops directly in the MXA block's scope (the grid built from the box and
# the GridSample itself), and the CBAM sigmoid gates. Softmax is ignored by type.
IGNORED_PATTERNS = (r".*/mxa/roi/.*", r".*/mxa/[^/]+$", r".*/mxa/(channel|spatial)/Sigmoid.*")
IGNORED_TYPES = ("Softmax",)


def _nncf_dataset(images: np.ndarray, batch: int = 1):
    import nncf

    # NNCF collects statistics per item; batch 1 keeps min/max statistics per image.
    items = [np.ascontiguousarray(images[i : i + batch], dtype=np.float32) for i in range(0, len(images), batch)]
    return nncf.Dataset(items)


def quantize_ir(ov_model, calibration: np.ndarray, method: str, *, model_type: str | None = "transformer",
                seed: int = 0):  # fmt: skip
    """NNCF PTQ of an OpenVINO model; returns (quantized model, settings for the manifest).

    ``method`` maps onto NNCF's range estimators: minmax -> MinMax (NNCF's default for
    activations is a mean of per-batch min/max, which is close), percentile -> quantile
    estimators, entropy has no NNCF equivalent and uses the default (recorded as such).
    """
    disable_telemetry()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in ("minmax", "entropy", "percentile"):
        raise ConfigError(f"unknown calibration method {method!r}")
    if method == "minmax":
        estimator = RangeEstimatorParametersSet.MINMAX
    elif method == "percentile":
        estimator = _quantile_estimator()
    else:
        estimator = None
    advanced = AdvancedQuantizationParameters()
    if estimator is not None:
        advanced.activations_range_estimator_params = estimator
    scope = nncf.IgnoredScope(patterns=list(IGNORED_PATTERNS), types=list(IGNORED_TYPES), validate=False)
    mtype = nncf.ModelType.TRANSFORMER if model_type == "transformer" else None
    quantized = nncf.quantize(
        ov_model, _nncf_dataset(calibration), subset_size=len(calibration), model_type=mtype,
        ignored_scope=scope, advanced_parameters=advanced, preset=nncf.QuantizationPreset.MIXED,
    )  # fmt: skip
    settings = {
        "tool": f"nncf.quantize {nncf.__version__}",
        "method": method if method != "entropy" else "entropy (no NNCF equivalent: default estimator)",
        "per_channel": True,
        "preset": "mixed (symmetric weights, asymmetric activations)",
        "model_type": model_type,
        "ignored_patterns": list(IGNORED_PATTERNS),
        "ignored_types": list(IGNORED_TYPES),
        "n_calibration": int(len(calibration)),
    }
    return quantized, settings


def _quantile_estimator():
    from nncf.quantization.range_estimator import (
        AggregatorType, RangeEstimatorParameters, StatisticsCollectorParameters, StatisticsType,
    )  # fmt: skip

    return RangeEstimatorParameters(
        min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=1e-4),
        max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=1e-4),
    )


def sensitive_ops_in_float(ov_model) -> list[str]:
    """Names of GridSample ops whose grid input is not produced by a FakeQuantize (a check)."""
    ok = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() == "GridSample":
            src = op.input(1).get_source_output().get_node()
            if src.get_type_name() != "FakeQuantize":
                ok.append(op.get_friendly_name())
    return ok


class OpenVinoBackend:
    name = "openvino"
    suffix = ".xml"

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
            ov_model, quant = quantize_ir(ov_model, opts.calibration, opts.calib_method, seed=opts.seed)
            quant["grid_inputs_in_float"] = sensitive_ops_in_float(ov_model)
            precision = {"weights": "int8", "activations": "int8", "inference_precision": "f32"}
        elif opts.fp16:
            quant = None
            precision = {"weights": "fp16", "activations": "fp16", "inference_precision": "f16"}
        else:
            quant = None
            precision = {"weights": "fp32", "activations": "fp32", "inference_precision": "f32"}
        # compress_to_fp16 defaults to True in save_model: only the fp16 artifact wants it.
        ov.save_model(ov_model, str(out_dir / XML), compress_to_fp16=opts.fp16)
        onnx_path.unlink()
        return BackendOutput([XML, BIN], "openvino", precision, quant)
