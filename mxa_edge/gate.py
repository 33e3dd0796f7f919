"""The drift gate's rule, once: bounds, the comparison, the verdict and the accuracy-control score.

An exported model passes when, against the FP32 model on the same validation images, no
pathology's ROC AUC drops by more than ``max_drop`` and the macro AUC by no more than
``max_macro_drop``. A drop exactly at its bound passes. The numbers come from
``mxa_edge.metrics.paired_auc_delta``; this module only judges them. Every place that
judges (the export's drift record, NNCF accuracy control, the report, the CLI) calls here.

Modes: ``"point"`` (the default) gates on the point estimate of the AUC change; ``"ci"``
fails a finding only when its whole paired-bootstrap interval (``delta_ci``) lies beyond the
bound, and falls back to the point estimate where there is no interval (``n_boot=0``).

numpy only: the runtime and the CLI may import it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from mxa_edge.errors import ConfigError

MODES = ("point", "ci")


@dataclass(frozen=True)
class GateSpec:
    """The gate's bounds (AUC drops; a negative bound demands an improvement) and mode."""

    max_macro_drop: float = 0.005
    max_drop: float = 0.02
    mode: str = "point"

    def validate(self) -> "GateSpec":
        """Raise ConfigError for bounds that are not AUC drops or an unknown mode; return self."""
        for bound in (self.max_macro_drop, self.max_drop):
            if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not bound >= -1:
                raise ConfigError("drift bounds are AUC drops and must be >= -1")
        if self.mode not in MODES:
            raise ConfigError(f"unknown drift gate mode {self.mode!r}; expected one of {', '.join(MODES)}")
        return self

    def to_dict(self) -> dict:
        return {"max_macro_drop": float(self.max_macro_drop), "max_drop": float(self.max_drop), "mode": self.mode}

    @classmethod
    def from_dict(cls, d: Mapping) -> "GateSpec":
        """From ``to_dict``'s keys; a missing key takes the default (older records have no mode)."""
        return cls(
            max_macro_drop=float(d.get("max_macro_drop", DEFAULT_GATE.max_macro_drop)),
            max_drop=float(d.get("max_drop", DEFAULT_GATE.max_drop)),
            mode=str(d.get("mode", DEFAULT_GATE.mode)),
        )


DEFAULT_GATE = GateSpec()  # the one source of the default bounds


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    drifted: list[str]  # findings past max_drop, then "macro" when the macro bound fails


def exceeds(delta: float, bound: float) -> bool:
    """THE comparison: does an AUC change ``delta`` drop by more than ``bound``?"""
    return delta < -bound


def finding_fails(delta: float | None, bound: float, *, ci: Sequence[float] | None = None, mode: str = "point") -> bool:
    """One AUC change against its bound. ``delta`` None (not evaluable) never fails.
    ``mode="ci"``: fails only when the interval's upper end is past the bound as well."""
    if delta is None:
        return False
    if mode == "ci" and ci is not None:
        return exceeds(ci[1], bound)
    if mode not in MODES:
        raise ConfigError(f"unknown drift gate mode {mode!r}; expected one of {', '.join(MODES)}")
    return exceeds(delta, bound)


def verdict(table: Mapping, spec: GateSpec = DEFAULT_GATE) -> GateVerdict:
    """The gate over ``paired_auc_delta``'s table (``per_label[name]["delta"]``/``["delta_ci"]``,
    ``macro_delta``/``macro_delta_ci``)."""
    drifted = [
        name
        for name, v in table["per_label"].items()
        if finding_fails(v.get("delta"), spec.max_drop, ci=v.get("delta_ci"), mode=spec.mode)
    ]
    if finding_fails(table.get("macro_delta"), spec.max_macro_drop, ci=table.get("macro_delta_ci"), mode=spec.mode):
        drifted.append("macro")
    return GateVerdict(not drifted, drifted)


def _headroom(delta: float, bound: float) -> float:
    """delta / bound (bounds under 1e-6 count as 1e-6), nudged where rounding in the division
    or that floor would put ``1 + headroom >= 0`` on the other side of ``exceeds``."""
    r = float(delta) / max(bound, 1e-6)
    if exceeds(delta, bound):
        return min(r, math.nextafter(-1.0, -math.inf))
    return max(r, -1.0)


def gate_score(targets, mask, prob_ref, spec: GateSpec = DEFAULT_GATE) -> Callable[[np.ndarray], float]:
    """The gate as one number for NNCF accuracy control: ``score(prob)`` = 1 + min(macro AUC
    change / max_macro_drop, worst per-pathology change / max_drop) against ``prob_ref`` (the
    FP32 model). 1 for the FP32 model, >= 0 exactly when ``verdict`` passes (point mode), so
    accuracy control runs with an absolute max_drop of 1. (The offset of 1 keeps it off zero:
    NNCF also computes the relative drop, dividing by it.) NaN when no finding is evaluable."""
    from mxa_edge.metrics import auc_per_label

    with np.errstate(all="ignore"):
        auc_ref = auc_per_label(targets, prob_ref, mask)

    def score(prob) -> float:
        with np.errstate(all="ignore"):
            delta = auc_per_label(targets, prob, mask) - auc_ref
        delta = delta[np.isfinite(delta)]  # the labels paired_auc_delta evaluates, in its order
        if delta.size == 0:
            return float("nan")
        macro, worst = float(delta.mean()), float(delta.min())
        return 1.0 + min(_headroom(macro, spec.max_macro_drop), _headroom(worst, spec.max_drop))

    return score


__all__ = [
    "DEFAULT_GATE",
    "MODES",
    "GateSpec",
    "GateVerdict",
    "exceeds",
    "finding_fails",
    "gate_score",
    "verdict",
]
