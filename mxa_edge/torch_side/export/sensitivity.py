"""Which layers stay in float: a label-free sensitivity analysis on the calibration images.

Why: a per-pathology drift gate is a ranking test. On a small model many findings have a
narrow logit spread (std 0.12-0.2 on the default run), so INT8 noise that is harmless for
the macro AUC reorders the few positives of a rare finding. Measured on the default run,
quantizing one layer alone adds logit noise of 0.07-0.18 of the logit spread for the head
and the convs that read the last stage's residual stream, and under 0.005 for almost every
other layer: a handful of layers carry nearly all the damage, and they are cheap to keep in
float.

How: the INT8 arithmetic is simulated in PyTorch with fake quantization (activations:
per-tensor asymmetric uint8 from the calibration min/max, as ORT's MinMax and NNCF do;
weights: per-output-channel symmetric int8) on every Conv2d/Linear the backends quantize.

- ``noise`` is the logit noise ratio: per finding, std(int8 logit - fp32 logit) / std(fp32
  logit) over the calibration images, and its maximum over findings (the gate is per finding).
- Each layer is scored alone; the most sensitive are kept in float, the fewest for which
  the whole model's simulated noise is within ``budget``.
- The default budget of 0.08 comes from a simulation on the default run: independent noise
  at that ratio moves the worst of the 14 per-finding AUCs by more than 0.02 in about 2% of
  draws, and by 0.0083 in the median (0.15: in 38%).

No labels and no validation images are used, so the choice cannot overfit the split the
drift gate checks. The result maps onto ONNX node / OpenVINO op names through the module
scopes the legacy exporter writes (``float_node_names``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

DEFAULT_BUDGET = 0.08
ALWAYS_FLOAT = (".mxa.roi.",)  # the ROI predictor stays float in every backend (grid precision)
MAX_IMAGES = 64  # sensitivity is a ratio of stds: 64 images pin it well and keep it fast
MIN_IMAGES = 8  # fewer, or images the model cannot tell apart: no spread to measure against


@dataclass
class FloatLayers:
    layers: list[str]  # torch module names kept in float (most sensitive first)
    noise_int8: float  # simulated noise ratio with every layer in INT8
    noise_mixed: float  # ... with ``layers`` in float
    budget: float
    n_quantizable: int
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer alone -> noise ratio
    skipped: str | None = None  # why no analysis ran (every layer then stays INT8)

    def summary(self, top: int = 10) -> dict:
        worst = sorted(self.sensitivity.items(), key=lambda kv: -kv[1])[:top]
        if self.skipped:
            return {"method": "skipped", "reason": self.skipped, "float_layers": []}
        return {
            "method": "fake-quant sensitivity on the calibration images (label-free)",
            "budget": self.budget,
            "noise_all_int8": round(self.noise_int8, 4),
            "noise_mixed": round(self.noise_mixed, 4),
            "n_quantizable": self.n_quantizable,
            "float_layers": self.layers,
            "most_sensitive": {k: round(v, 4) for k, v in worst},
        }


QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")  # the ONNX ops the INT8 backends quantize


def node_scope(node_name: str) -> str:
    """ONNX node name -> the torch module it came from. The legacy exporter names nodes by
    module scope, with Sequential children as ``parent/parent.i`` and ModuleList items as
    ``parent.i``: ``/backbone/stages/stages.2/blocks/blocks.1/ffn1/m/pw1/Conv`` ->
    ``backbone.stages.2.blocks.1.ffn1.m.pw1``."""
    scope = node_name.rsplit("/", 1)[0].strip("/")
    scope = re.sub(r"(\w+)/\1\.(\d+)", r"\1.\2", scope)
    return scope.replace("/", ".")


def float_node_names(onnx_path, layers) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes of the ONNX file that implement ``layers``.
    OpenVINO keeps them as op names (plus ``/WithoutBiases`` on the convolution itself).
    A module called twice (CBAM's shared channel MLP) has its second call's nodes scoped
    ``fc1_1``: those match ``fc1`` too."""
    import onnx

    wanted = set(layers)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def scope_of(name):
        scope = node_scope(name)
        return scope if scope in wanted else re.sub(r"_\d+$", "", scope)

    return sorted(n.name for n in graph.node if n.op_type in QUANTIZED_OP_TYPES and scope_of(n.name) in wanted)


def _quantizable(model) -> dict:
    import torch

    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and not any(s in f".{name}." for s in ALWAYS_FLOAT)
    }


class _FakeQuant:
    """Context: fake-quantize the inputs and weights of the chosen layers of ``model``."""

    def __init__(self, modules: dict, ranges: dict, layers, weight_max: int = 127):
        self.modules, self.ranges, self.layers = modules, ranges, list(layers)
        self.weight_max = weight_max
        self.handles, self.saved = [], {}

    def __enter__(self):
        import torch

        for name in self.layers:
            mod = self.modules[name]
            lo, hi = self.ranges[name]
            lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be exact (padding)
            scale = max(hi - lo, 1e-8) / 255.0
            zp = int(round(-lo / scale))
            self.handles.append(
                mod.register_forward_pre_hook(
                    lambda m, args, s=scale, z=zp: (torch.fake_quantize_per_tensor_affine(args[0], s, z, 0, 255),)
                )
            )
            w = mod.weight.data
            self.saved[name] = w.clone()
            axis_max = w.abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-12)
            q = self.weight_max
            scales = (axis_max / float(q)).float()
            w.copy_(
                torch.fake_quantize_per_channel_affine(w, scales, torch.zeros_like(scales, dtype=torch.int32), 0, -q, q)
            )
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for name, w in self.saved.items():
            self.modules[name].weight.data.copy_(w)
        return False


def noise_ratio(ref: np.ndarray, new: np.ndarray) -> tuple[float, np.ndarray]:
    """(max over findings, per finding) of std(new - ref) / std(ref) on logits."""
    spread = ref.std(0)
    per = (new - ref).std(0) / np.maximum(spread, 1e-8)
    return float(per.max()), per


def choose_float_layers(
    model, calibration: np.ndarray, budget: float = DEFAULT_BUDGET, *, weight_max: int = 127, progress=None
) -> FloatLayers:
    """Score every quantizable layer alone, then keep the most sensitive in float, the fewest
    for which the whole model's simulated noise is within ``budget`` (binary search over the
    sorted list; the noise falls, not strictly, as layers return to float). ``weight_max``:
    the largest |int8 weight| of the export's scheme (``Int8Scheme.max_weight``: 64 for the
    portable 7-bit weights, 127 for full range), so the simulation has the export's rounding."""
    import torch

    say = progress or (lambda msg: None)
    model = model.eval()
    x = torch.from_numpy(np.ascontiguousarray(calibration[:MAX_IMAGES], dtype=np.float32))
    modules = _quantizable(model)
    ranges: dict[str, list[float]] = {}

    def record(name):
        def hook(mod, args):
            a = args[0].detach()
            r = ranges.setdefault(name, [float("inf"), float("-inf")])
            r[0], r[1] = min(r[0], float(a.min())), max(r[1], float(a.max()))

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in modules.items()]
    with torch.no_grad():
        # Ranges from the full calibration set (as the backends take them), in chunks.
        for i in range(0, len(calibration), 32):
            model(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 32], dtype=np.float32)))
        for h in handles:
            h.remove()
        ref = model(x).double().numpy()
        if len(x) < MIN_IMAGES or float(ref.std(0).min()) < 1e-6:
            why = (
                f"{len(x)} calibration images (< {MIN_IMAGES})"
                if len(x) < MIN_IMAGES
                else "the model's logits do not vary over the calibration images"
            )
            return FloatLayers([], float("nan"), float("nan"), budget, len(modules), skipped=why)

        def noise(layers) -> float:
            with _FakeQuant(modules, ranges, layers, weight_max):
                return noise_ratio(ref, model(x).double().numpy())[0]

        names = [n for n in modules if n in ranges]  # layers the forward actually used
        sensitivity = {}
        for i, name in enumerate(names):
            if i % 20 == 0:
                say(f"layer sensitivity {i}/{len(names)}")
            sensitivity[name] = noise([name])
        order = sorted(names, key=lambda n: -sensitivity[n])
        all_int8 = noise(names)
        if all_int8 <= budget:
            return FloatLayers([], all_int8, all_int8, budget, len(names), sensitivity)
        lo, hi = 0, len(order)  # invariant: keeping order[:hi] float meets the budget (hi = all float)
        cache = {len(order): 0.0}
        while lo < hi:
            mid = (lo + hi) // 2
            cache[mid] = noise(order[mid:])
            if cache[mid] <= budget:
                hi = mid
            else:
                lo = mid + 1
        return FloatLayers(order[:hi], all_int8, cache.get(hi, noise(order[hi:])), budget, len(names), sensitivity)
