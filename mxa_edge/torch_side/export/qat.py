"""Quantization-aware fine-tuning (QAT) with NNCF PyTorch, distilled from the FP32 model.

The story:
1. ``nncf.quantize`` on the fused FP32 model with the calibration set gives a copy with
   trainable fake-quantizers (ranges initialised as in PTQ). Same float islands as PTQ: the
   MXA ROI predictor, the grid construction and GridSample, the CBAM sigmoid gates, Softmax,
   the attention products, and the layers the sensitivity analysis keeps in float. With
   ``Int8Scheme.PORTABLE`` every weight quantizer trains on 7 bits (``seven_bit_weights``).
2. Fine-tune ``epochs`` on the run's TRAIN split (never valid: the drift gate measures there):
   loss = BCE(QAT logits, FP32 probabilities), AdamW at a small learning rate, no
   augmentation. Distillation only: the goal is the FP32 model's behaviour, which the gate
   checks; a ground-truth term (tried first) moved the per-finding AUCs away from FP32 on
   the default run (macro -0.0106 after one epoch).
3. the target's exporter (``export_qat``, declared by its ``BackendSpec``) writes the fine-tuned
   model: ONNX with QuantizeLinear / DequantizeLinear pairs (ONNX Runtime), or an OpenVINO IR
   with FakeQuantize ops (NNCF's native export, which OpenVINO reads exactly). The pipeline
   then runs the usual drift gate.

Fine-tuning runs in eval mode: after Conv+BN fusion the network has no BatchNorm or dropout
left, so train and eval compute the same function, and eval keeps the op sequence NNCF
traced (timm's EfficientViT takes another path for its attention biases in train mode).
Those biases come from a cache built without gradient, so they stay fixed; every conv and
linear weight, bias and quantizer range is trained.

NNCF compiles a small C++ extension on first use (under ``~/.cache/torch_extensions``); on a
busy 2-core machine that takes over NNCF's default 60 s limit, so the limit is raised here
unless the user set ``NNCF_EXTENSION_LOAD_TIMEOUT``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from mxa_edge.formats.precision import Int8Scheme
from mxa_edge.formats.records import QatEpoch, QatRecord
from mxa_edge.runtime.engines import open_model_file
from mxa_edge.support.errors import MissingDependencyError
from mxa_edge.support.telemetry import disable_telemetry
from mxa_edge.torch_side.export.onnx_graph import constant_tensors

# NNCF torch op names are module scopes joined by "/" plus "<function>/<call index>".
IGNORED_PATTERNS = (
    r".*/mxa/roi/.*",  # the ROI predictor
    r".*/mxa/[^/]+/\d+$",  # ops directly in the MXA block: grid construction and grid_sample
    r".*/mxa/(channel|spatial)/sigmoid/\d+$",  # CBAM gates
    # The attention products (activation x activation), float as in PTQ (onnx_graph.
    # activation_matmuls): quantized, both operands are full-range int8 activations, which
    # MLAS's AVX2 kernels saturate on (the portable QAT model moved by 0.03-0.05 between CPU
    # classes with them), and their per-call quantization costs more than the int8 product saves.
    r".*/attn/matmul/\d+$",
)
IGNORED_TYPES = ("softmax",)
EXTENSION_TIMEOUT_S = "600"


def float_patterns(layers) -> list[str]:
    """IgnoredScope patterns for torch module names: NNCF names a module's op
    ``backbone/stages/2/downsample/res2/0/m/conv2d/0``."""
    import re

    return ["^" + re.escape(name.replace(".", "/")) + r"/(conv2d|linear)/\d+$" for name in layers]


def _nncf():
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", EXTENSION_TIMEOUT_S)
    disable_telemetry()
    try:
        import nncf
        import nncf.torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"QAT needs NNCF with its PyTorch backend ({exc}); pip install nncf") from exc
    return nncf


def prime_attention_cache(model, example) -> None:
    """Rebuild timm's eval-mode attention-bias cache without autograd history (a cache built
    inside a graph would be freed by the first backward and break the second)."""
    import torch

    model.train()
    model.eval()
    with torch.no_grad():
        model(example[:1])


def qat_finetune(
    fused,
    example,
    calibration: np.ndarray,
    train,
    preprocess,
    *,
    epochs: int = 1,
    lr: float = 1e-5,
    batch_size: int = 32,
    seed: int = 0,
    say: Callable[[str], None] = lambda msg: None,
    float_layers=(),
    scheme: Int8Scheme = Int8Scheme.PORTABLE,
):
    """(fake-quantized fine-tuned copy of ``fused``, the manifest's ``qat`` record).

    ``train`` is the run's TRAIN split as ``mxa_edge.data.arrays`` split arrays (uint8 images,
    targets, mask); ``calibration`` the float32 (N, 1, S, S) calibration images.
    """
    import torch
    import torch.nn.functional as F

    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    say(f"QAT: inserting fake-quantizers (NNCF, {len(calibration)} calibration images)")
    data = nncf.Dataset(
        [torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1])) for i in range(len(calibration))]
    )
    patterns = list(IGNORED_PATTERNS) + float_patterns(float_layers)
    scope = nncf.IgnoredScope(patterns=patterns, types=list(IGNORED_TYPES), validate=False)
    # Bias correction and SmoothQuant are PTQ repairs (and take most of quantize's time in
    # torch); fine-tuning adjusts biases and weights itself.
    # PORTABLE: 7-bit weights are set on the quantizers below (seven_bit_weights); NNCF's own
    # overflow fix would only pre-scale the initial range, which fine-tuning then moves (QAT
    # weights reached |q| = 128 with it). VNNI: NNCF's default (first layer only).
    from nncf.quantization.advanced_parameters import OverflowFix

    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.DISABLE if scheme is Int8Scheme.PORTABLE else OverflowFix.FIRST_LAYER,
        disable_bias_correction=True,
        smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=-1),
    )
    qmodel = nncf.quantize(
        fused,
        data,
        subset_size=len(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=scope,
        preset=nncf.QuantizationPreset.MIXED,
        advanced_parameters=advanced,
    )
    n_seven_bit = seven_bit_weights(qmodel) if scheme is Int8Scheme.PORTABLE else 0
    prime_attention_cache(qmodel, example)
    prime_attention_cache(fused, example)
    say(f"QAT: fine-tuning {epochs} epoch(s) on {len(train.images)} training images, lr {lr:g}")

    params = [p for p in qmodel.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n = len(train.images)
    steps = max(1, n // batch_size)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size].numpy()
            x = torch.from_numpy(train.model_input(idx, preprocess))
            with torch.no_grad():
                soft = torch.sigmoid(fused(x))
            logits = qmodel(x)
            loss = F.binary_cross_entropy_with_logits(logits, soft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        record = QatEpoch(epoch=epoch + 1, loss=total / steps)
        history.append(record)
        say(f"QAT epoch {epoch + 1}/{epochs}: distillation loss {record.loss:.4f}")
    prime_attention_cache(qmodel, example)
    info = QatRecord(
        tool=f"nncf.quantize (torch) {nncf.__version__} + fine-tuning",
        epochs=int(epochs),
        lr=float(lr),
        batch_size=int(batch_size),
        steps_per_epoch=int(steps),
        n_train=int(n),
        optimizer="AdamW (weight decay 0)",
        loss="BCE(logits, FP32 probabilities)",
        losses=history,
        model_type="transformer",
        preset="mixed (symmetric weights, asymmetric activations)",
        int8_scheme=scheme.value,
        seven_bit_weight_quantizers=n_seven_bit,
        bias_correction=False,
        smooth_quant=False,
        ignored_patterns=patterns,
        ignored_types=list(IGNORED_TYPES),
        n_calibration=int(len(calibration)),
    )
    return qmodel, info


def seven_bit_weights(qmodel) -> int:
    """Train and export every weight quantizer on 7 bits (``Int8Scheme.PORTABLE``); returns how
    many. NNCF's ``half_range`` (its overflow-fix mode) is what this sets: the quantizer trains
    on levels -64..63 of its range, and both exports keep that grid in int8 containers: Q/DQ
    ONNX (ONNX Runtime) with the 7-bit step as its scale, so |q| <= 64 (no int16 saturation in
    MLAS's AVX2 kernels); FakeQuantize (OpenVINO) in the layout oneDNN's non-VNNI kernels take
    without loss, as NNCF's PTQ overflow fix writes it. Weight quantizers are the per-channel
    symmetric ones (activations are per-tensor)."""
    from nncf.torch.quantization.layers import SymmetricQuantizer

    n = 0
    for module in qmodel.modules():
        if isinstance(module, SymmetricQuantizer) and module.per_channel:
            # NNCF has no public setter after creation. Not narrow: -64..63 exports as the
            # 256-level pair NNCF's Q/DQ export requires (narrow -63..63 would give 254).
            module._half_range, module._narrow_range = True, False
            module.set_levels()
            n += 1
    return n


def set_export_mode(qmodel, mode: str) -> int:
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    value = {"qdq": QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS, "fq": QuantizerExportMode.FAKE_QUANTIZE}[mode]
    n = 0
    for module in qmodel.modules():
        if isinstance(module, BaseQuantizer):
            module.set_export_mode(value)
            n += 1
    return n


def qat_logits_max_diff(qmodel, path: Path, example, runtime: str) -> float:
    """Max |exported - torch QAT| on the logits: recorded, not enforced (Q/DQ kernels round
    and requantize differently from NNCF's fake-quantizers; the drift gate is the check)."""
    import torch

    engine = open_model_file(path, runtime, threads=1, precision="f32")
    got = engine.run(example.numpy())["logits"]
    with torch.no_grad():
        ref = qmodel(example).numpy()
    return float(np.abs(got - ref).max())


def fold_weight_quantizers(path: Path) -> int:
    """Store QAT weights as int8 in the ONNX file: every ``QuantizeLinear`` whose input is a
    float initializer (a weight; scale and zero point constant) is evaluated once here and
    replaced by its int8 result, which then feeds the ``DequantizeLinear`` directly, as in
    ONNX Runtime's own static quantization. NNCF exports float weights followed by Q/DQ, which
    makes the file 4x larger per weight than the PTQ export and re-quantizes every weight on
    every run. Same arithmetic: ``np.rint`` rounds half to even, as QuantizeLinear does.
    Returns the number of weights folded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    values = constant_tensors(graph)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded, keep = 0, []
    for node in graph.node:
        ins = list(node.input)
        if not (
            node.op_type == "QuantizeLinear"
            and len(ins) == 3
            and ins[0] in values
            and ins[1] in values
            and ins[2] in values
            and values[ins[0]].data_type == onnx.TensorProto.FLOAT
        ):
            keep.append(node)
            continue
        w = numpy_helper.to_array(values[ins[0]]).astype(np.float32)
        scale = numpy_helper.to_array(values[ins[1]]).astype(np.float32)
        zero = numpy_helper.to_array(values[ins[2]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:  # per-channel along ``axis``
            shape = [1] * w.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(w / scale) + zero.astype(np.float32), info.min, info.max).astype(zero.dtype)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        consumers[ins[0]] -= 1
        folded += 1
    if folded:
        unused = {name for name, n in consumers.items() if n == 0}
        kept_inits = [i for i in graph.initializer if i.name not in unused]
        # A weight the exporter wrote as a Constant node (7-bit weights: NNCF clamps them to the
        # half range first, and constant folding turns that into a Constant) is dead now too.
        keep = [n for n in keep if not (n.op_type == "Constant" and n.output[0] in unused)]
        del graph.node[:]
        graph.node.extend(keep)
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
        onnx.save(model, str(path))
    return folded
