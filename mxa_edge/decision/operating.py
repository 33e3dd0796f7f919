"""Probability calibration and operating points, fitted on a TUNING split (numpy only at import).

A classifier trained with a per-label sigmoid ranks images well (its AUC) without its
probabilities being calibrated, and one fixed threshold of 0.5 gives very different
sensitivity and specificity from one finding to the next (their prevalences differ by an
order of magnitude). This module fits, per label:

- a Platt scaling ``sigmoid(scale * logit + bias)`` (``fit_platt`` / ``apply_platt``), which
  repairs calibration (ECE) and, with ``scale > 0``, keeps the ranking, so AUC is unchanged;
- a decision threshold chosen by an explicit policy (``parse_policy`` / ``fit_thresholds``).

Both must be fitted on a tuning split and then applied, frozen, to the held-out split: fitted
on the images they are evaluated on, the reported ECE and sensitivity would be optimistic.
Nothing here can tell the splits apart; the callers choose them.

Conventions follow ``mxa_edge.decision.metrics``: arrays are (N, C) with an optional 0/1 ``mask``
whose 0 cells are never read; a probability counts as positive when ``p >= threshold``;
every ``to_dict()`` is JSON-ready (plain floats, None instead of NaN) and ``from_dict``
reads it back. scikit-learn is imported only inside ``fit_platt``, so the runtime (predict
on an exported artifact) can import this module to APPLY a calibration without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from mxa_edge.decision.metrics import _check_probabilities, _prepare, _resolve_labels, sigmoid
from mxa_edge.support.errors import ConfigError, require

# The default operating point is Youden's J (max sensitivity + specificity - 1): it assumes
# neither a prevalence nor a clinical cost of a miss versus a false alarm, and weighs the two
# error rates equally, so it is the neutral choice when nobody has said what the model is for.
# A triage / rule-out use, where a missed finding costs more than a second look, should ask
# for a sensitivity floor instead (``sens:0.90``); a confirmatory use for ``spec:0.90``.
DEFAULT_POLICY = "youden"

# Where a label has only one class in the tuning split no threshold can be fitted; 0.5 is the
# threshold every metric used before operating points existed, so such labels behave as before.
FALLBACK_THRESHOLD = 0.5

# Platt scaling is a two-parameter fit on thousands of rows: it needs no regularisation, and
# an L2 penalty would shrink the scale toward 0, i.e. pull every probability toward 0.5.
# C=1e4 makes the (solver's default) penalty negligible while keeping lbfgs well-posed.
PLATT_C = 1e4
PLATT_MIN_PER_CLASS = 2

_POLICY_KINDS = ("youden", "f1", "sens", "spec")
_POLICY_FORMS = "youden, f1, sens:X or spec:X with X in (0, 1), e.g. sens:0.90"


# --------------------------------------------------------------------------------------
# Platt scaling
# --------------------------------------------------------------------------------------


def _float_tuple(name: str, values) -> tuple[float, ...]:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one number per label, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a.tolist()}")
    return tuple(float(v) for v in a)


@dataclass(frozen=True)
class PlattFit:
    """Per-label calibration: probability = sigmoid(scale * logit + bias).

    ``notes`` maps each label left at identity (scale 1, bias 0) to why. ``labels`` names the
    columns in order (empty when built by hand), so a calibration saved for one label order
    is never applied silently to another.
    """

    scale: tuple[float, ...]
    bias: tuple[float, ...]
    notes: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        scale, bias = _float_tuple("scale", self.scale), _float_tuple("bias", self.bias)
        if len(scale) != len(bias):
            raise ValueError(f"scale has {len(scale)} values but bias has {len(bias)}")
        if any(a <= 0 for a in scale):
            raise ValueError(f"every scale must be > 0 (a calibration must keep the ranking), got {list(scale)}")
        labels = tuple(str(n) for n in self.labels)
        if labels and len(labels) != len(scale):
            raise ValueError(f"labels names {len(labels)} columns but scale has {len(scale)}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "notes", {str(k): str(v) for k, v in dict(self.notes).items()})

    def apply(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated probabilities of (N, C) logits, float64."""
        return apply_platt(logits, self.scale, self.bias)

    def to_dict(self) -> dict:
        return {
            "scale": list(self.scale),
            "bias": list(self.bias),
            "labels": list(self.labels),
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PlattFit:
        return cls(
            scale=tuple(d["scale"]),
            bias=tuple(d["bias"]),
            notes=dict(d.get("notes", {})),
            labels=tuple(d.get("labels", ())),
        )


def apply_platt(logits: ArrayLike, scale: Sequence[float], bias: Sequence[float]) -> np.ndarray:
    """sigmoid(scale * logits + bias) per label column (the last axis), float64.

    Uses ``mxa_edge.decision.metrics.sigmoid``, which cannot overflow. With every scale > 0 the
    ranking of each column is kept, so its AUC is unchanged, except where float64 saturates
    (scaled logits beyond about +-37 all become exactly 0 or 1 and tie).
    """
    x = np.asarray(logits, dtype=np.float64)
    a = np.asarray(scale, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"scale and bias must be one number per label each, got shapes {a.shape} and {b.shape}")
    if x.ndim == 0 or x.shape[-1] != a.shape[0]:
        raise ValueError(f"logits have shape {x.shape} but the calibration has {a.shape[0]} labels (last axis)")
    return sigmoid(x * a + b)


def fit_platt(
    logits: ArrayLike,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
) -> PlattFit:
    """Fit one Platt scaling per label on a tuning split's raw logits.

    Per label: a logistic regression of the target on the single feature "raw logit" over the
    label's unmasked rows, with an intercept and effectively no penalty (``PLATT_C``). A
    label stays at identity (scale 1, bias 0), with the reason in ``notes``, when it has
    fewer than ``PLATT_MIN_PER_CLASS`` positives or negatives (two points cannot pin down a
    slope and an intercept), or when the fitted scale is not positive (the logits rank the
    tuning rows backwards or not at all there, and a calibration must not reverse the
    model's ranking: with scale > 0 every AUC is kept).
    """
    yt, m, s = _prepare(targets, mask, logits=logits)
    x_all = s["logits"]
    names = _resolve_labels(labels, yt.shape[1])
    scale = np.ones(yt.shape[1])
    bias = np.zeros(yt.shape[1])
    notes: dict[str, str] = {}
    logistic = None
    for c, name in enumerate(names):
        rows = m[:, c]
        x, y = x_all[rows, c], yt[rows, c].astype(int)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        if min(n_pos, n_neg) < PLATT_MIN_PER_CLASS:
            notes[name] = (
                f"identity: {n_pos} positive and {n_neg} negative tuning rows; "
                f"Platt scaling needs at least {PLATT_MIN_PER_CLASS} of each"
            )
            continue
        if logistic is None:
            logistic = require("sklearn.linear_model").LogisticRegression
        model = logistic(C=PLATT_C, solver="lbfgs", max_iter=1000).fit(x[:, None], y)
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
            notes[name] = (
                f"identity: the fitted scale {a:.3g} is not positive (the logits do not rank the tuning "
                "positives above the negatives), and a calibration must keep the model's ranking"
            )
            continue
        scale[c], bias[c] = a, b
    return PlattFit(scale=tuple(scale), bias=tuple(bias), notes=notes, labels=names)


# --------------------------------------------------------------------------------------
# Operating-point policies
# --------------------------------------------------------------------------------------


def _format_target(x: float) -> str:
    """Two decimals when that is exact (0.9 -> '0.90'), else the shortest round-trip text."""
    two = f"{x:.2f}"
    return two if float(two) == x else repr(float(x))


@dataclass(frozen=True)
class OperatingPolicy:
    """How a threshold is chosen: ``kind`` 'youden' | 'f1' (no target) or 'sens' | 'spec'
    (``target`` in (0, 1): the sensitivity / specificity floor). ``str()`` gives the
    canonical text that ``parse_policy`` reads back (e.g. 'sens:0.90')."""

    kind: str
    target: float | None = None

    def __post_init__(self):
        if self.kind not in _POLICY_KINDS:
            raise ConfigError(f"unknown operating-point policy kind {self.kind!r}: expected {_POLICY_FORMS}")
        if self.kind in ("youden", "f1"):
            if self.target is not None:
                raise ConfigError(f"operating-point policy {self.kind} takes no target: expected {_POLICY_FORMS}")
            return
        target = float(self.target) if self.target is not None else math.nan
        if not 0 < target < 1:
            raise ConfigError(f"{self.kind} needs a target in (0, 1), got {self.target!r}: expected {_POLICY_FORMS}")
        object.__setattr__(self, "target", target)

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{_format_target(self.target)}"


def parse_policy(text: str | OperatingPolicy) -> OperatingPolicy:
    """'youden', 'f1', 'sens:0.90' or 'spec:0.90' (any target in (0, 1); case and spaces
    ignored) -> OperatingPolicy. Anything else raises ConfigError listing the accepted forms."""
    if isinstance(text, OperatingPolicy):
        return text
    if isinstance(text, str):
        t = text.strip().lower()
        if t in ("youden", "f1"):
            return OperatingPolicy(t)
        kind, sep, value = t.partition(":")
        if sep and kind.strip() in ("sens", "spec"):
            try:
                target = float(value)
            except ValueError:
                target = math.nan
            if 0 < target < 1:
                return OperatingPolicy(kind.strip(), target)
    raise ConfigError(f"unknown operating-point policy {text!r}: expected {_POLICY_FORMS}")


# --------------------------------------------------------------------------------------
# Threshold fitting
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdFit:
    """Per-label thresholds fitted on a tuning split by one policy.

    ``thresholds`` is in label order (pass it as ``threshold=`` to ``metrics.evaluate``);
    ``policy`` is the policy's canonical text; ``per_label[name]`` holds ``threshold``,
    ``sensitivity`` and ``specificity`` achieved ON THE TUNING DATA (None where undefined),
    ``n_pos``, ``n_neg`` and ``source`` ('fitted', or why not, e.g. 'fallback 0.5: no
    positives in the tuning split'). Tuning-data rates are optimistic by construction: quote
    the held-out split's ``evaluate`` for what the thresholds achieve.
    """

    thresholds: tuple[float, ...]
    policy: str
    per_label: dict[str, dict]

    def __post_init__(self):
        thresholds = _float_tuple("thresholds", self.thresholds)
        per_label = {str(k): dict(v) for k, v in dict(self.per_label).items()}
        if len(per_label) != len(thresholds):
            raise ValueError(f"per_label names {len(per_label)} labels but there are {len(thresholds)} thresholds")
        for (name, row), t in zip(per_label.items(), thresholds):
            if row.get("threshold") != t:
                raise ValueError(f"per_label[{name!r}]['threshold'] = {row.get('threshold')!r} but thresholds has {t}")
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "policy", str(parse_policy(self.policy)))
        object.__setattr__(self, "per_label", per_label)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.per_label)

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "thresholds": list(self.thresholds),
            "per_label": {name: dict(row) for name, row in self.per_label.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> ThresholdFit:
        return cls(thresholds=tuple(d["thresholds"]), policy=d["policy"], per_label=dict(d["per_label"]))


def _between(lo: float, hi: float) -> float:
    """A threshold strictly above ``lo`` and at most ``hi``: their midpoint, or ``hi`` when
    the two are adjacent floats (the midpoint would round onto ``lo`` and flip its rows)."""
    t = lo + (hi - lo) / 2.0
    return t if lo < t <= hi else hi


def _rates_at(p: np.ndarray, y: np.ndarray, t: float) -> tuple[float | None, float | None]:
    pred = p >= t
    pos, neg = y == 1, y == 0
    sens = float(np.mean(pred[pos])) if pos.any() else None
    spec = float(np.mean(~pred[neg])) if neg.any() else None
    return sens, spec


def _fit_label(p: np.ndarray, y: np.ndarray, policy: OperatingPolicy) -> dict:
    """One label's threshold on its unmasked tuning rows (see ``fit_thresholds``)."""
    n_pos = int(np.sum(y == 1))
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        reason = "no unmasked rows" if len(y) == 0 else ("no positives" if n_pos == 0 else "no negatives")
        t, source = FALLBACK_THRESHOLD, f"fallback {FALLBACK_THRESHOLD}: {reason} in the tuning split"
    else:
        # Candidate j calls positive every row with p >= u[j]; counts are exact integers.
        u, inv = np.unique(p, return_inverse=True)
        pos_at = np.bincount(inv[y == 1], minlength=len(u))
        neg_at = np.bincount(inv[y == 0], minlength=len(u))
        tp = np.cumsum(pos_at[::-1])[::-1]
        fp = np.cumsum(neg_at[::-1])[::-1]
        source = "fitted"
        if policy.kind == "youden":
            # J = tp/P - fp/N compared as the integer tp*N - fp*P: float subtraction could
            # split exact ties. Ties -> the highest threshold (fewest positive calls).
            j_num = tp.astype(np.int64) * n_neg - fp.astype(np.int64) * n_pos
            j = int(np.flatnonzero(j_num == j_num.max())[-1])
        elif policy.kind == "f1":
            # F1 = 2tp / (tp + fp + P); a correctly rounded division maps equal fractions to
            # equal floats, so ties are exact. Ties -> the highest threshold.
            f1 = 2.0 * tp / (tp + fp + n_pos)
            j = int(np.flatnonzero(f1 == f1.max())[-1])
        elif policy.kind == "sens":
            # Sensitivity falls as the threshold rises and u[0] calls every row positive
            # (sensitivity 1), so the highest threshold meeting the floor always exists.
            j = int(np.flatnonzero(tp / n_pos >= policy.target)[-1])
        else:
            ok = np.flatnonzero((n_neg - fp) / n_neg >= policy.target)
            # Ties at the top score can hold so many negatives that no score meets the floor:
            # then only "nothing positive" does (specificity 1, sensitivity 0).
            j = int(ok[0]) if ok.size else len(u)
        if j == len(u):
            t = _between(float(u[-1]), 1.0) if u[-1] < 1.0 else float(np.nextafter(1.0, 2.0))
            source = f"fitted above every tuning score: no score reaches {policy}"
        else:
            # Halfway down to the next lower distinct score: a row exactly at the chosen score
            # then sits half a gap above the threshold, so a tiny numeric change in an
            # exported model cannot flip its decision. The lowest score has no lower
            # neighbour and is itself the threshold.
            t = _between(float(u[j - 1]), float(u[j])) if j > 0 else float(u[0])
    sens, spec = _rates_at(p, y, t)
    return {
        "threshold": float(t),
        "sensitivity": sens,
        "specificity": spec,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "source": source,
    }


def fit_thresholds(
    probs: ArrayLike,
    targets: ArrayLike,
    mask: ArrayLike | None = None,
    policy: str | OperatingPolicy = DEFAULT_POLICY,
    labels: Sequence[str] | None = None,
) -> ThresholdFit:
    """Per-label thresholds on a tuning split's probabilities, chosen by ``policy``.

    Candidates are the distinct probabilities among the label's unmasked rows (positive when
    p >= candidate); among them:

    - ``youden``: the largest sensitivity + specificity - 1;
    - ``f1``: the largest F1;
    - ``sens:x``: the HIGHEST candidate whose sensitivity >= x (the fewest false alarms that
      keep the floor);
    - ``spec:x``: the LOWEST candidate whose specificity >= x (the most findings caught that
      keep the floor); if none reaches it, a threshold above every score.

    Ties in youden / f1 go to the highest candidate. The threshold returned for candidate
    score s is then the midpoint between s and the next lower distinct score (s itself for
    the lowest score): decisions on the tuning rows are exactly those of the candidate, but
    no tuning row sits on the threshold, so a tiny numeric change in an exported model does
    not flip the decisions of rows that scored exactly there.

    Labels without both classes among their unmasked rows get ``FALLBACK_THRESHOLD`` (0.5)
    and a ``source`` saying why.
    """
    pol = parse_policy(policy)
    yt, m, s = _prepare(targets, mask, probs=probs)
    p_all = s["probs"]
    _check_probabilities("probs", p_all, m)
    names = _resolve_labels(labels, yt.shape[1])
    per_label = {}
    for c, name in enumerate(names):
        rows = m[:, c]
        per_label[name] = _fit_label(p_all[rows, c], yt[rows, c], pol)
    return ThresholdFit(
        thresholds=tuple(row["threshold"] for row in per_label.values()),
        policy=str(pol),
        per_label=per_label,
    )
