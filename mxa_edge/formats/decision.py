"""``DecisionRule``: how a model's logits become what ``predict`` prints (numpy only).

Two steps, both fitted after training on the run's *tuning* split (carved from train.csv at
patient level; never the held-out valid.csv, on which they are then reported):

1. calibration, per finding: Platt scaling, probability = sigmoid(scale * logit + bias). A
   positive scale keeps each finding's ranking, so AUC is unchanged; the probability becomes
   an estimate of how often such an image has the finding (in the tuning split's population);
2. an operating point per finding: the threshold on that calibrated probability chosen by the
   policy (``youden``, ``sens:0.90``, ``spec:0.90``, ``f1``; see ``mxa_edge.decision.operating``).

Stored in the run manifest's ``decision`` section and copied into every artifact's manifest
(which the artifact digest covers), so train, the drift gate, eval, the report, verify and
predict apply one rule and cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mxa_edge.decision.metrics import sigmoid
from mxa_edge.decision.operating import apply_platt, fit_platt, fit_thresholds, parse_policy
from mxa_edge.labels import CHEXPERT_LABELS

UNCALIBRATED = "none"


@dataclass(frozen=True)
class DecisionRule:
    scale: dict  # label -> Platt scale (> 0)
    bias: dict  # label -> Platt bias
    thresholds: dict  # label -> threshold on the calibrated probability
    policy: str  # the operating-point policy asked for, e.g. "youden"
    calibration: str = "platt"  # or "none" (identity)
    label_source: dict = field(default_factory=dict)  # label -> "fitted" or why it fell back
    fitted_on: dict = field(default_factory=dict)  # {"split": "tune", "fingerprint": ..., "n_images": ...}
    tuning: dict = field(default_factory=dict)  # label -> sensitivity/specificity reached on the tuning split

    # ------------------------------------------------------------------ applying

    def _array(self, d: dict, default: float) -> np.ndarray:
        return np.array([float(d.get(label, default)) for label in CHEXPERT_LABELS], dtype=np.float64)

    def threshold_array(self) -> np.ndarray:
        return self._array(self.thresholds, 0.5)

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated probabilities (N, 14), float64, of raw logits (N, 14)."""

        z = np.asarray(logits, dtype=np.float64)
        return sigmoid(z * self._array(self.scale, 1.0) + self._array(self.bias, 0.0))

    def decisions(self, probabilities) -> np.ndarray:
        """bool (N, 14): positive where the calibrated probability reaches the threshold."""
        return np.asarray(probabilities, dtype=np.float64) >= self.threshold_array()

    def label_policy(self, label: str) -> str:
        """What set this label's threshold: the policy, or the reason it fell back."""
        source = self.label_source.get(label, "fitted")
        return self.policy if source == "fitted" else source

    # ------------------------------------------------------------------ records

    @classmethod
    def uncalibrated(cls) -> DecisionRule:
        """Identity calibration and a flat 0.5: what a model without a tuning split gets."""
        ones = {label: 1.0 for label in CHEXPERT_LABELS}
        return cls(
            scale=ones,
            bias={label: 0.0 for label in CHEXPERT_LABELS},
            thresholds={label: 0.5 for label in CHEXPERT_LABELS},
            policy="flat 0.5",
            calibration=UNCALIBRATED,
        )

    @classmethod
    def fit(cls, logits, targets, mask, policy: str, *, calibrate: bool = True, fitted_on: dict | None = None):
        """Fit calibration, then thresholds on the calibrated probabilities, on ONE split (the
        tuning split; the caller passes it). ConfigError for an unknown policy."""

        parsed = parse_policy(policy)
        if calibrate:
            platt = fit_platt(logits, targets, mask)
            scale, bias, notes = platt.scale, platt.bias, dict(platt.notes)
        else:
            scale, bias, notes = (1.0,) * len(CHEXPERT_LABELS), (0.0,) * len(CHEXPERT_LABELS), {}
        probs = apply_platt(logits, scale, bias)
        fit = fit_thresholds(probs, targets, mask, parsed)
        return cls(
            scale=dict(zip(CHEXPERT_LABELS, map(float, scale))),
            bias=dict(zip(CHEXPERT_LABELS, map(float, bias))),
            thresholds=dict(zip(CHEXPERT_LABELS, map(float, fit.thresholds))),
            policy=str(parsed),
            calibration="platt" if calibrate else UNCALIBRATED,
            label_source={k: v["source"] for k, v in fit.per_label.items()},
            fitted_on={**(fitted_on or {}), **({"calibration_notes": notes} if notes else {})},
            tuning={
                k: {m: v.get(m) for m in ("sensitivity", "specificity", "n_pos", "n_neg")}
                for k, v in fit.per_label.items()
            },
        )

    def to_dict(self) -> dict:
        return {
            "calibration": self.calibration,
            "scale": {label: float(self.scale.get(label, 1.0)) for label in CHEXPERT_LABELS},
            "bias": {label: float(self.bias.get(label, 0.0)) for label in CHEXPERT_LABELS},
            "policy": self.policy,
            "thresholds": {label: float(self.thresholds.get(label, 0.5)) for label in CHEXPERT_LABELS},
            "label_source": dict(self.label_source),
            "fitted_on": dict(self.fitted_on),
            "tuning": dict(self.tuning),
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> DecisionRule:
        if not d:
            return cls.uncalibrated()
        return cls(
            scale=dict(d.get("scale") or {}),
            bias=dict(d.get("bias") or {}),
            thresholds=dict(d.get("thresholds") or {}),
            policy=str(d.get("policy", "flat 0.5")),
            calibration=str(d.get("calibration", UNCALIBRATED)),
            label_source=dict(d.get("label_source") or {}),
            fitted_on=dict(d.get("fitted_on") or {}),
            tuning=dict(d.get("tuning") or {}),
        )
