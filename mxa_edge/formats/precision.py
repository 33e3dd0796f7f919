"""Precision: what an export was asked for (``Precision``) and what its model files hold and run
(``NumericFormat``, the manifest's ``precision`` record). Bench labels, folder names and the
compute bound a row is compared with all come from here, never from parsing folder names."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Precision(str, Enum):
    """The precision an export is asked for on the command line."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # post-training quantization
    QAT_INT8 = "qat-int8"  # quantization-aware fine-tuning, then INT8

    @classmethod
    def from_flags(cls, *, int8: bool = False, fp16: bool = False, qat: bool = False) -> Precision:
        """``--qat`` means INT8; ``--int8 --fp16`` (TensorRT: INT8 with FP16 fallback) is INT8."""
        if qat:
            return cls.QAT_INT8
        if int8:
            return cls.INT8
        return cls.FP16 if fp16 else cls.FP32

    @property
    def int8(self) -> bool:
        return self in (Precision.INT8, Precision.QAT_INT8)

    @property
    def qat(self) -> bool:
        return self is Precision.QAT_INT8

    @property
    def compute(self) -> str:
        """Which measured peak a benchmark row is compared with: int8, fp16 or fp32."""
        return "int8" if self.int8 else self.value

    @property
    def label(self) -> str:
        """As tables show it: FP32, FP16, INT8, INT8 QAT."""
        return "INT8 QAT" if self.qat else self.value.upper()


@dataclass(frozen=True)
class NumericFormat:
    """The manifest's ``precision`` record: the number formats of the weights and activations in
    the model files, and the inference precision the engine is asked for (OpenVINO's hint:
    "f32" keeps a bf16-capable CPU from running an FP32 IR in bf16)."""

    weights: str  # fp32 | fp16 | int8
    activations: str  # fp32 | fp16 | int8 | uint8
    inference_precision: str | None = None  # fp32 | f32 | fp16 | int8 | int8+fp16

    def to_dict(self) -> dict:
        return {
            "weights": self.weights,
            "activations": self.activations,
            "inference_precision": self.inference_precision,
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> NumericFormat:
        d = d or {}
        return cls(d.get("weights") or "fp32", d.get("activations") or "fp32", d.get("inference_precision"))

    def precision(self, *, qat: bool = False) -> Precision:
        if self.weights == "int8":
            return Precision.QAT_INT8 if qat else Precision.INT8
        return Precision.FP16 if self.weights == "fp16" else Precision.FP32


FP32 = NumericFormat("fp32", "fp32", "fp32")


class Int8Scheme(str, Enum):
    """How an INT8 export lays out its weights for the CPUs it may meet (the manifest's
    ``quantization.int8_scheme``).

    x86 INT8 kernels without VNNI (AVX2, and AVX-512 without VNNI) multiply uint8 activations
    by int8 weights with ``VPMADDUBSW``, which adds two products into a *saturating* int16:
    255 x 127 x 2 = 64,770 does not fit in 32,767. ONNX Runtime's MLAS takes that path on
    every such CPU (it dispatches on CPUID); oneDNN (OpenVINO) does too unless the weights were
    laid out for it (NNCF's ``overflow_fix``). With VNNI (``VPDPBUSD``) or AMX the products are
    summed in int32 and nothing saturates. So a full-range INT8 model computes one thing on the
    VNNI machine that gated it and another on an AVX2 workstation (default run's tiny test
    model: logits 3.9 apart, against 0.5 between INT8 and FP32).

    ``PORTABLE`` (default) keeps every weight that feeds an int8 kernel within 7 bits
    (|q| <= 64): 255 x 64 x 2 = 32,640 fits, so every kernel path computes the same integers.
    ONNX Runtime: ``reduce_range`` weights; OpenVINO: NNCF ``overflow_fix=enable`` on every
    layer; QAT: the same overflow fix on its weight quantizers. ``VNNI`` uses the full int8
    weight range: a little more precision for sites that deploy only on VNNI/AMX CPUs; its
    artifacts are checked on the AVX2 path at export, and ``verify`` refuses them there.
    """

    PORTABLE = "portable"
    VNNI = "vnni"

    @property
    def max_weight(self) -> int:
        """The largest |int8 weight| this scheme allows in front of an int8 kernel."""
        return 64 if self is Int8Scheme.PORTABLE else 127
