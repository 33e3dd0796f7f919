"""The drift gate's rule, once: bounds, the comparisons, the verdict and the accuracy-control score.

Gate v2 judges what ``predict`` outputs, not only the ranking. Against the FP32 model, on the
same held-out images, with the manifest's calibration and thresholds applied to both models,
an exported model passes when:

- ROC AUC: no finding drops by more than ``max_drop``, the macro AUC by no more than
  ``max_macro_drop`` (ranking; unchanged from gate v1);
- sensitivity and specificity at the finding's threshold: neither drops by more than
  ``max_sens_drop`` / ``max_spec_drop``. With n positives, sensitivity moves in steps of 1/n,
  so the bound used is ``max(bound, 1/n)`` (and 1/n negatives for specificity): one borderline
  image never decides an export by itself, two do (the resolution is in the table);
- decision agreement: for every finding at least ``min_agreement`` of the images get the same
  positive/negative decision from both models (this catches churn that leaves sensitivity and
  specificity unchanged: as many images flipping each way);
- calibration: the expected calibration error rises by no more than ``max_ece_increase``;
- input guard (``mxa_edge.decision.guard``): the share of held-out images the exported model's guard
  flags as out of distribution exceeds the FP32 model's by no more than
  ``max_guard_flag_increase`` (never finer than one image, 1/n).

A value exactly at its bound passes. An AUC is blind to a constant added to one finding's
logits; sensitivity, specificity and agreement are not, which is why they are gated.

The numbers come from ``mxa_edge.decision.metrics.paired_auc_delta``; this module only judges them.
Every place that judges (the export's drift record, NNCF accuracy control, the report, the
CLI) calls here. Modes: ``"point"`` (the default, strict) gates the point estimates; ``"ci"``
fails a check only when its whole paired-bootstrap interval lies beyond the bound (for small
validation sets), and falls back to the point estimate where there is no interval.
``subgroups``: the same checks on every evaluable slice of the CSV's own columns (sex, age
band, AP/PA) that the drift table carries; always reported, gated only when this is on.

numpy only: the runtime and the CLI may import it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from mxa_edge.decision.metrics import paired_auc_delta
from mxa_edge.support.errors import ConfigError

MODES = ("point", "ci")


@dataclass(frozen=True)
class GateSpec:
    """The gate's bounds and mode. Drops are positive numbers (a negative bound demands an
    improvement); ``min_agreement`` is a floor on a fraction; ``max_ece_increase`` a ceiling."""

    max_macro_drop: float = 0.005
    max_drop: float = 0.02
    mode: str = "point"
    max_sens_drop: float = 0.03
    max_spec_drop: float = 0.03
    min_agreement: float = 0.90
    max_ece_increase: float = 0.02
    subgroups: bool = False
    max_guard_flag_increase: float = 0.02  # after subgroups: positional construction keeps its meaning

    def validate(self) -> "GateSpec":
        """Raise ConfigError for bounds out of range or an unknown mode; return self."""
        for name in (
            "max_macro_drop",
            "max_drop",
            "max_sens_drop",
            "max_spec_drop",
            "max_ece_increase",
            "max_guard_flag_increase",
        ):
            bound = getattr(self, name)
            if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not bound >= -1:
                what = "AUC drops" if name in ("max_macro_drop", "max_drop") else f"{name} bounds"
                raise ConfigError(f"drift bounds are {what} and must be >= -1 (got {name}={bound!r})")
        a = self.min_agreement
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0 <= a <= 1:
            raise ConfigError(f"min_agreement is a fraction of images and must be in [0, 1] (got {a!r})")
        if self.mode not in MODES:
            raise ConfigError(f"unknown drift gate mode {self.mode!r}; expected one of {', '.join(MODES)}")
        return self

    def to_dict(self) -> dict:
        return {
            "max_macro_drop": float(self.max_macro_drop),
            "max_drop": float(self.max_drop),
            "max_sens_drop": float(self.max_sens_drop),
            "max_spec_drop": float(self.max_spec_drop),
            "min_agreement": float(self.min_agreement),
            "max_ece_increase": float(self.max_ece_increase),
            "max_guard_flag_increase": float(self.max_guard_flag_increase),
            "mode": self.mode,
            "subgroups": bool(self.subgroups),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "GateSpec":
        """From ``to_dict``'s keys; a missing key takes the default."""
        fields = {k: d[k] for k in DEFAULT_GATE.to_dict() if k in d}
        for k, v in fields.items():
            if k not in ("mode", "subgroups"):
                fields[k] = float(v)
        return cls(**fields)


DEFAULT_GATE = GateSpec()  # the one source of the default bounds


# ------------------------------------------------------------------------------ comparisons


def exceeds(delta: float, bound: float) -> bool:
    """THE comparison: does a change ``delta`` drop by more than ``bound``?"""
    return delta < -bound


def finding_fails(delta: float | None, bound: float, *, ci: Sequence[float] | None = None, mode: str = "point") -> bool:
    """One drop against its bound. ``delta`` None (not evaluable) never fails.
    ``mode="ci"``: fails only when the interval's upper end is past the bound as well."""
    if delta is None:
        return False
    if mode == "ci" and ci is not None:
        return exceeds(ci[1], bound)
    if mode not in MODES:
        raise ConfigError(f"unknown drift gate mode {mode!r}; expected one of {', '.join(MODES)}")
    return exceeds(delta, bound)


# A change of k images is computed as a difference of two fractions (0.87 - 0.84), which
# rounding can put a hair beyond k/n: 3 of 100 positives came out as -0.030000000000000027 and
# failed a 0.03 bound that "exactly at its bound passes" promises to pass. The slack is far
# below one image (1/n), so it never lets a further image through.
_ROUNDING_SLACK = 1e-9


def resolution_bound(bound: float, n: int | None) -> float:
    """The bound used for a sensitivity (n = positives) or specificity (n = negatives) drop, or
    the guard's flag rate (n = images): never finer than one image's step, 1/n, and a count of
    images exactly at the bound passes despite rounding."""
    return max(float(bound), 1.0 / n) + _ROUNDING_SLACK if n else float(bound)


@dataclass(frozen=True)
class Check:
    """One gated quantity: ``kind`` "drop" (fails when the value drops past the bound:
    ``exceeds``), "floor" (value < bound) or "rise" (value > bound)."""

    scope: str  # a finding, "macro", or "all findings"; subgroup checks are "<slice> / <finding>"
    metric: str  # "AUC", "sensitivity", "specificity", "agreement", "ECE", "flag rate"
    kind: str
    value: float | None
    bound: float
    ci: tuple | None
    failed: bool

    def describe(self) -> str:
        if self.kind == "drop":
            return f"{self.scope} {self.metric} {self.value:+.4f} (max drop {self.bound:.4f})"
        if self.kind == "floor":
            return f"{self.scope} {self.metric} {self.value:.3f} (min {self.bound:.3f})"
        return f"{self.scope} {self.metric} {self.value:+.4f} (max rise {self.bound:.4f})"


def _fails(kind: str, value: float | None, bound: float, ci, mode: str) -> bool:
    if value is None:
        return False
    if mode == "ci" and ci is not None:
        # The whole interval beyond the bound: its best end fails too.
        value = ci[1] if kind in ("drop", "floor") else ci[0]
    if kind == "drop":
        return exceeds(value, bound)
    if kind == "floor":
        return value < bound
    return value > bound


def _check(scope, metric, kind, value, bound, ci, mode) -> Check:
    ci = tuple(ci) if ci is not None else None
    return Check(scope, metric, kind, value, float(bound), ci, _fails(kind, value, bound, ci, mode))


def _table_checks(table: Mapping, spec: GateSpec, prefix: str = "") -> list[Check]:
    out = []
    mode = spec.mode
    for name, v in table["per_label"].items():
        scope = prefix + name
        out.append(_check(scope, "AUC", "drop", v.get("delta"), spec.max_drop, v.get("delta_ci"), mode))
        if "sensitivity_delta" in v:  # gate v1 tables have AUC only
            out.append(
                _check(
                    scope,
                    "sensitivity",
                    "drop",
                    v.get("sensitivity_delta"),
                    resolution_bound(spec.max_sens_drop, v.get("n_pos")),
                    v.get("sensitivity_delta_ci"),
                    mode,
                )
            )
            out.append(
                _check(
                    scope,
                    "specificity",
                    "drop",
                    v.get("specificity_delta"),
                    resolution_bound(spec.max_spec_drop, v.get("n_neg")),
                    v.get("specificity_delta_ci"),
                    mode,
                )
            )
            out.append(
                _check(
                    scope,
                    "agreement",
                    "floor",
                    v.get("agreement_at_threshold"),
                    spec.min_agreement,
                    v.get("agreement_ci"),
                    mode,
                )
            )
    out.append(
        _check(
            prefix + "macro",
            "AUC",
            "drop",
            table.get("macro_delta"),
            spec.max_macro_drop,
            table.get("macro_delta_ci"),
            mode,
        )
    )
    if "ece_delta" in table:
        out.append(
            _check(
                prefix + "all findings",
                "ECE",
                "rise",
                table.get("ece_delta"),
                spec.max_ece_increase,
                table.get("ece_delta_ci"),
                mode,
            )
        )
    guard = table.get("guard")
    if guard:  # the input guard's flag rate on the held-out split (not per slice)
        out.append(
            _check(
                prefix + "input guard",
                "flag rate",
                "rise",
                guard.get("flag_rate_delta"),
                resolution_bound(spec.max_guard_flag_increase, guard.get("n_images")),
                guard.get("flag_rate_delta_ci"),
                mode,
            )
        )
    return out


def checks(table: Mapping, spec: GateSpec = DEFAULT_GATE) -> list[Check]:
    """Every gated quantity of a drift table (``paired_auc_delta``'s dict, optionally with a
    ``subgroups`` section: slice -> {"status": None or why not evaluable, "table": ...}).
    Subgroup checks are included only when ``spec.subgroups``."""
    out = _table_checks(table, spec)
    if spec.subgroups:
        for name, sub in (table.get("subgroups") or {}).items():
            if sub.get("status") is None and sub.get("table") is not None:
                out.extend(_table_checks(sub["table"], spec, prefix=f"{name} / "))
    return out


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    drifted: list[str]  # scopes with a failing check, in table order ("macro", "all findings" too)
    failures: tuple = ()  # the failing Checks

    def reasons(self) -> list[str]:
        return [c.describe() for c in self.failures]


def verdict(table: Mapping, spec: GateSpec = DEFAULT_GATE) -> GateVerdict:
    """The gate over a drift table (see ``checks``)."""
    failures = [c for c in checks(table, spec) if c.failed]
    drifted = list(dict.fromkeys(c.scope for c in failures))
    return GateVerdict(not failures, drifted, tuple(failures))


# ------------------------------------------------------------------------------ accuracy control


def _headroom(c: Check) -> float:
    """A check as one number that is >= -1 exactly when it passes: value / bound for a drop,
    (value - 1) / (1 - floor) for a floor, -value / bound for a rise (bounds under 1e-6 count
    as 1e-6); nudged where rounding would put it on the other side of the comparison."""
    v = float(c.value)
    if c.kind == "drop":
        r = v / max(c.bound, 1e-6)
    elif c.kind == "floor":
        r = (v - 1.0) / max(1.0 - c.bound, 1e-6)
    else:
        r = -v / max(c.bound, 1e-6)
    if c.failed:
        return min(r, math.nextafter(-1.0, -math.inf))
    return max(r, -1.0)


def gate_score(targets, mask, prob_ref, spec: GateSpec = DEFAULT_GATE, thresholds=0.5) -> Callable[[np.ndarray], float]:
    """The gate as one number for NNCF accuracy control: ``score(prob)`` = 1 + the smallest
    headroom over every check of ``verdict`` (point mode, no subgroups) against ``prob_ref``
    (the FP32 model's calibrated probabilities; ``prob`` the same for the candidate; decisions
    at ``thresholds``). 1 for the FP32 model, >= 0 exactly when ``verdict`` passes, so accuracy
    control runs with an absolute max_drop of 1. (The offset of 1 keeps it off zero: NNCF also
    computes the relative drop, dividing by it.) NaN when nothing is evaluable."""
    from dataclasses import replace

    point = replace(spec, mode="point", subgroups=False)

    def score(prob) -> float:
        with np.errstate(all="ignore"):
            table = paired_auc_delta(targets, prob_ref, prob, mask, n_boot=0, threshold=thresholds)
        judged = [c for c in checks(table, point) if c.value is not None]
        if not any(c.metric == "AUC" for c in judged):
            return float("nan")
        return 1.0 + min(_headroom(c) for c in judged)

    return score


__all__ = [
    "DEFAULT_GATE",
    "MODES",
    "Check",
    "GateSpec",
    "GateVerdict",
    "checks",
    "exceeds",
    "finding_fails",
    "gate_score",
    "resolution_bound",
    "verdict",
]
