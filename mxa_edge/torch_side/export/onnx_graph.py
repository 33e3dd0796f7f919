"""ONNX graph work shared by every target that starts from ONNX (ONNX Runtime, OpenVINO, TensorRT):
the export itself (legacy TorchScript exporter, opset 17), the parity check against torch, and
the graph passes around static INT8 QDQ quantization.

Why the legacy exporter: the dynamo exporter does not name outputs from a tuple-returning
wrapper the same way and handles the hand-built GridSample grid less predictably; the
legacy path keeps module scopes in node names (``/backbone/.../mxa/roi/...``), which is
how the sensitive ROI/grid nodes are found and kept in float.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from mxa_edge.formats.precision import Int8Scheme
from mxa_edge.support.errors import ConfigError
from mxa_edge.torch_side.export.prepare import AuxOutputs
from mxa_edge.torch_side.export.sensitivity import QUANTIZED_OP_TYPES, float_node_names

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max |ORT - torch| on FP32 logits


def export_onnx(model, example, path: Path, *, static_batch: int | None = None, equivalent: bool = True) -> list[str]:
    """Fused student -> ONNX at ``path`` with input ``image`` and named outputs; returns them.

    ``example`` is a batch of 2 so no dimension is specialised to 1; the batch axis is dynamic
    unless ``static_batch`` fixes it. ``equivalent`` (default) traces the export-only
    attention and MXA modules (``export_modules``: the same function in ~45% fewer graph
    nodes); pass False for a model whose modules must be traced as they are (QAT: NNCF's
    quantizers hook the original modules).
    """
    import torch

    if equivalent:
        from mxa_edge.torch_side.export.export_modules import export_equivalent

        model = export_equivalent(model)
    if static_batch is not None:
        example = example[:1].expand(static_batch, *example.shape[1:]).contiguous()
    wrapper = AuxOutputs(model).eval()
    names = wrapper.output_names
    axes = None if static_batch is not None else {"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["image"],
            output_names=names,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    inline_shared_initializers(path)
    return names


def inline_shared_initializers(path: Path) -> None:
    """Replace ``Identity(initializer)`` nodes by copies of the initializer.

    The legacy exporter de-duplicates equal parameters (e.g. the all-zero biases of freshly
    fused convs) and feeds the duplicates through Identity nodes; ORT's quantizer then sees
    a bias that is not an initializer and leaves it in float, which blocks the int8 conv
    fusion at run time.
    """
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            g.initializer.append(copy)
        else:
            keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
        onnx.save(m, str(path))


def check_parity(model, path: Path, example) -> float:
    """Max |ORT - torch| over the logits; raises when above PARITY_TOLERANCE."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": example.numpy()})[0]
    with torch.no_grad():
        ref = model(example).numpy()
    diff = float(np.abs(got - ref).max())
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime FP32 logits differ from PyTorch by {diff:.2e} (> {PARITY_TOLERANCE})")
    return diff


def sensitive_nodes(model_path: Path, *, softmax: bool = True) -> list[str]:
    """Names of the nodes to keep in float: everything inside an MXA block (``/mxa/`` scope)
    and, optionally, Softmax.

    The ROI predictor and the sampling grid (or the export-only interpolation matrices) must
    stay float: quantizing grid coordinates to 8 bits moves the sampled box by up to 1/256 of
    its range per step, which shows up directly in the pooled features. The CBAM gates work
    on tiny tensors ((B, C, 1, 2) pooled vectors, one-channel maps): a Q/DQ pair around each
    costs more time than its int8 kernel saves (M5/224 ORT INT8: see benchmarks/m5_levers.py).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return sorted(node.name for node in graph.node if "/mxa/" in node.name or (softmax and node.op_type == "Softmax"))


def constant_tensors(graph) -> dict:
    """Name -> TensorProto of every constant value of an ONNX graph: its initializers and the
    outputs of its Constant nodes (the torch exporter writes scales and shapes as those)."""
    values = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
    return values


def activation_matmuls(model_path: Path) -> list[str]:
    """MatMul nodes with no constant input: the attention products (q.k^T, attn.v). Left in
    float: quantizing both of their inputs per call costs more than the int8 product saves
    (default run, ORT, batch 1: 0.75x of FP32 with them quantized, 0.94x without; batch 8:
    0.58x vs 0.84x), and OpenVINO's NNCF leaves them float as well."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    constant = constant_tensors(graph)
    return sorted(n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constant for i in n.input))


class _ArrayReader:
    """onnxruntime CalibrationDataReader over a float32 (N, 1, S, S) array, in small batches."""

    def __init__(self, images: np.ndarray, batch: int = 8, exact: bool = False):
        self.images, self.batch, self.exact, self.i = images, batch, exact, 0

    def get_next(self):
        # exact: a fixed-batch graph takes only full batches (the remainder is left out).
        if self.i >= len(self.images) or (self.exact and self.i + self.batch > len(self.images)):
            return None
        x = self.images[self.i : self.i + self.batch]
        self.i += self.batch
        return {"image": np.ascontiguousarray(x, dtype=np.float32)}

    def rewind(self):
        self.i = 0


def float_bypass(path: Path) -> int:
    """Give every consumer that ORT does not run in INT8 the float tensor instead of its
    quantize-dequantize copy (except an int8 op's own output, see below); returns how many
    inputs were rewired.

    ORT's QDQ quantizer quantizes a tensor once and feeds the DequantizeLinear output to ALL
    its consumers. For EfficientViT's residual stream that means the skip-connection Add
    itself reads the 8-bit stream: its rounding error then accumulates block after block.
    On the default run that was most of the INT8 logit noise (mean over findings 0.39 -> 0.2
    of the logit spread with this pass alone). The int8 Conv/MatMul fusions are unaffected:
    they still consume the Q/DQ pair.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {i.name for i in graph.initializer}
    float_of = {}  # DequantizeLinear output -> the float activation it stands for
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            q = producer.get(node.input[0])
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] in initializers:
                continue
            origin = producer.get(q.input[0])
            # An int8 op's own output stays quantized: handing its float output to another
            # consumer would stop ORT from fusing DQ -> Conv -> Q into QLinearConv (the conv
            # would run dequantized, slower than FP32: M5/224 0.55x). Its range is its own,
            # small and well covered, so this costs little accuracy.
            if origin is not None and origin.op_type in QUANTIZED_OP_TYPES:
                continue
            float_of[node.output[0]] = q.input[0]
    rewired = 0
    for node in graph.node:
        if node.op_type in QUANTIZED_OP_TYPES or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
                rewired += 1
    if rewired:
        onnx.save(model, str(path))
    return rewired


def quantize_onnx(
    src: Path,
    dst: Path,
    calibration: np.ndarray,
    method: str,
    *,
    symmetric: bool = False,
    exclude_softmax: bool = True,
    float_layers=(),
    scheme: Int8Scheme = Int8Scheme.PORTABLE,
) -> dict:
    """Static INT8 QDQ quantization of ``src`` into ``dst``; returns the settings used (the
    manifest's ``quantization``: keys of ``records.QuantizationRecord``).

    Only Conv, Gemm and weight MatMuls run in INT8 (the ops with int8 kernels that pay);
    element-wise ops and the attention's activation x activation MatMuls
    (``activation_matmuls``) stay float and read float inputs (``float_bypass``).
    ``float_layers`` (torch module names, from ``sensitivity.choose_float_layers``) are kept
    in float as well.

    Weights: QInt8, per channel (depthwise and 1x1 convs have very different channel ranges),
    within 7 bits (ORT's ``reduce_range``) under the default ``Int8Scheme.PORTABLE``: MLAS
    multiplies uint8 activations by int8 weights with the saturating ``VPMADDUBSW`` on every
    x86 CPU without VNNI, and full-range weights overflow its int16 pair sums there (tiny test
    model: logits 3.9 apart between an AVX2 and a VNNI CPU; see ``Int8Scheme`` and
    benchmarks/int8_portability.py). ``Int8Scheme.VNNI`` keeps the full range.
    Activations: QUInt8 by default (U8S8, the fastest kernels on x86).
    ``symmetric=True`` (TensorRT) uses QInt8 with zero points of 0 instead.
    ``quant_pre_process`` is not run: its symbolic shape inference fails on this graph, and
    ORT's own shape inference in quantize_static is enough.

    Measured alternatives (batch 1, 2 threads, vs ORT FP32): S8S8 (symmetric int8
    activations) is 2x slower than U8S8 on this CPU; per-tensor weights and quantizing
    Softmax are within noise of this default. With the attention products in float, INT8 is
    1.20x FP32 at batch 1 and 1.29x at batch 8 on M5/224 (1.03x / 1.19x with them
    quantized), but 0.94x on M0/128: there the int8 convs run in NHWC and ORT inserts a
    Transpose pair around each one that the window-attention reshapes keep from cancelling
    (213 Transposes in the M0/128 INT8 graph).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ConfigError(f"unknown calibration method {method!r}; expected one of {', '.join(methods)}")

    excluded = sorted(
        set(sensitive_nodes(src, softmax=exclude_softmax))
        | set(float_node_names(src, float_layers))
        | set(activation_matmuls(src))
    )
    activation = QuantType.QInt8 if symmetric else QuantType.QUInt8
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.99
    if symmetric:
        # TensorRT wants every Q/DQ it can fuse explicit; it keeps biases in float/int32 itself.
        extra.update({"QuantizeBias": False, "DedicatedQDQPair": True, "AddQDQPairToWeight": True})
    # Histogram calibrators (entropy, percentile) stack the collected tensors, so every batch
    # must have the same size: feed them one image at a time. They also print progress to
    # stdout, which belongs to results (--json): send it to stderr.
    # A model traced at a fixed batch takes exactly that many images per calibration call.
    fixed = _fixed_batch(src)
    with contextlib.redirect_stdout(sys.stderr), _without_preprocess_advice():
        quantize_static(
            str(src),
            str(dst),
            _ArrayReader(calibration, batch=fixed or (8 if method == "minmax" else 1), exact=fixed is not None),
            quant_format=QuantFormat.QDQ,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=scheme is Int8Scheme.PORTABLE,
            calibrate_method=methods[method],
            nodes_to_exclude=excluded,
            extra_options=extra,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
        )
    rewired = float_bypass(dst)
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "method": method,
        "per_channel": True,
        "weights": "int8 symmetric" + (", 7-bit range (reduce_range)" if scheme is Int8Scheme.PORTABLE else ""),
        "int8_scheme": scheme.value,
        "max_abs_int8_weight": int8_weight_extent(dst),
        "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
        "op_types": list(QUANTIZED_OP_TYPES),
        "activation_matmuls": "float (attention products; see activation_matmuls)",
        "float_bypass_inputs": rewired,
        "excluded_nodes": excluded,
        "n_calibration": int(len(calibration)),
    }


def int8_weight_extent(path: Path) -> int:
    """The largest |q| over the int8 weights that feed an int8 kernel (the constant inputs of
    DequantizeLinear nodes): at most 64 means no u8 x s8 pair sum can saturate int16 on any
    x86 kernel path (255 x 64 x 2 = 32,640 <= 32,767). 0 when the graph has none."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    values = constant_tensors(graph)
    extent = 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in values:
            q = numpy_helper.to_array(values[node.input[0]])
            if q.dtype == np.int8 and q.size:
                extent = max(extent, int(np.abs(q.astype(np.int16)).max()))
    return extent


def _fixed_batch(path: Path) -> int | None:
    """The input's batch size when the graph fixes it, else None."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


@contextlib.contextmanager
def _without_preprocess_advice():
    """quantize_static logs (root logger, WARNING) advice to run quant_pre_process, which is
    left out on purpose (see quantize_onnx): drop that message, and only that, for the call."""
    import logging

    class Drop(logging.Filter):
        def filter(self, record):
            return "pre-processing before quantization" not in record.getMessage()

    root, drop = logging.getLogger(), Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
