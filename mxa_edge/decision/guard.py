"""The input guard: "this image is not what I was trained on" (torch-free).

A model trained on frontal chest radiographs still returns 14 confident-looking numbers for a
lateral view, a film inverted by a MONOCHROME mix-up, a hand X-ray or a photographed document.
Every artifact therefore carries a guard, fitted at export:

* **features**: the exported graph's ``features`` output, the global-average-pooled output of
  every backbone stage concatenated (``MultiLabelStudent.forward_aux``). Early stages
  keep image statistics (polarity, texture, exposure) that the last, finding-tuned stage may
  discard.
* **score**: the Mahalanobis distance of those features to the training images' (Lee et al.,
  NeurIPS 2018, "A simple unified framework for detecting out-of-distribution samples"), with
  scikit-learn's Ledoit-Wolf shrunk covariance: the feature dimension (hundreds) is not small
  against the number of training images, and an unshrunk inverse would blow up on directions
  the training set barely spans.
* **threshold**: a percentile (default the 99th) of the scores of the *tuning* split, images
  the FP32 model never trained on but which are in distribution: about 1% of such images are
  flagged by construction. Nothing is fitted on the held-out split; the drift gate measures
  the guard there (flag rate of the FP32 model vs the exported one).

The fitted parameters (mean, whitening matrix) live in ``guard.npz`` inside the artifact
(hashed like every model file); ``predict`` computes the score with numpy from the features the
engine returns, so the runtime stays torch-free. Scoring is ``||(f - mean) @ W||`` with
``W`` the Cholesky factor of the precision matrix: one matmul per batch.

Why Mahalanobis and not, say, max-softmax or energy scores: this is multi-label (there is no
softmax over classes to be unsure about), and a phantom-trained model is confident on anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mxa_edge.formats.naming import GUARD_FILE
from mxa_edge.formats.records import GuardFlagRates, GuardRecord
from mxa_edge.support.errors import ArtifactError

FEATURES_OUTPUT = "features"
DEFAULT_PERCENTILE = 99.0
MAX_FIT_IMAGES = 4000  # training images whose features fit the mean/covariance (a seeded sample beyond)
METHOD = "mahalanobis (Ledoit-Wolf covariance) on pooled stage features"


@dataclass
class InputGuard:
    """A fitted guard: ``score(features)`` is the Mahalanobis distance; above ``threshold`` an
    image is flagged as out of distribution."""

    mean: np.ndarray  # (D,)
    whitening: np.ndarray  # (D, D): ||(f - mean) @ whitening||^2 = (f - mean)^T Sigma^-1 (f - mean)
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    n_fit: int = 0  # training images the mean/covariance were fitted on
    n_threshold: int = 0  # tuning images the threshold came from
    shrinkage: float | None = None
    tune_scores: dict = field(default_factory=dict)  # quantiles of the tuning scores (for the report)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"guard features must be (N, {self.dim}), got {f.shape}")
        return np.sqrt(np.square((f - self.mean) @ self.whitening).sum(axis=1))

    def flags(self, features) -> np.ndarray:
        """True where the image is out of distribution (score above the threshold)."""
        return self.score(features) > self.threshold

    # --- storage -----------------------------------------------------------------------------

    def record(self, held_out: dict | None = None, challenge: dict | None = None) -> GuardRecord:
        """What the artifact manifest says about the guard (the arrays are in ``guard.npz``);
        ``held_out``: its measured flag rates (``guard_drift``), ``challenge``: kind -> {n, flagged}."""
        return GuardRecord(
            file=GUARD_FILE,
            method=METHOD,
            output=FEATURES_OUTPUT,
            feature_dim=self.dim,
            threshold=float(self.threshold),
            threshold_rule=f"{self.percentile:g}th percentile of the tuning split's scores (FP32 model)",
            percentile=float(self.percentile),
            fitted_on={"mean_covariance": "train", "threshold": "tune"},
            n_fit=int(self.n_fit),
            n_threshold=int(self.n_threshold),
            shrinkage=self.shrinkage,
            tune_scores=dict(self.tune_scores),
            held_out=GuardFlagRates.optional(held_out),
            challenge=challenge,
        )

    def save(self, folder) -> str:
        path = Path(folder) / GUARD_FILE
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, mean=self.mean.astype(np.float64), whitening=self.whitening.astype(np.float64))
        return GUARD_FILE

    @classmethod
    def load(cls, folder, record: GuardRecord) -> InputGuard:
        """The guard of an artifact folder (its file was hash-checked by ``load_artifact``)."""
        path = Path(folder) / record.file
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, whitening = z["mean"], z["whitening"]
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable input guard ({exc}); re-export the model") from None
        if mean.ndim != 1 or whitening.shape != (mean.shape[0], mean.shape[0]):
            raise ArtifactError(f"{path}: input guard arrays have inconsistent shapes; re-export the model")
        return cls(
            mean=mean,
            whitening=whitening,
            threshold=float(record.threshold),
            percentile=float(DEFAULT_PERCENTILE if record.percentile is None else record.percentile),
            n_fit=int(record.n_fit),
            n_threshold=int(record.n_threshold),
            shrinkage=record.shrinkage,
            tune_scores=dict(record.tune_scores or {}),
        )


def load_guard(artifact) -> InputGuard | None:
    """The input guard of a loaded artifact (``formats.Artifact``), its file read through
    ``Artifact.member`` (listed and hash-checked), or None for an artifact without one."""
    record = artifact.manifest.guard
    if record is None:
        return None
    path = artifact.member(record.file)
    return InputGuard.load(path.parent, replace(record, file=path.name))


def fit_guard(train_features, tune_features, percentile: float = DEFAULT_PERCENTILE) -> InputGuard:
    """Mean and Ledoit-Wolf covariance from ``train_features``; threshold = ``percentile`` of the
    distances of ``tune_features`` (images the model did not train on)."""
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train_features, dtype=np.float64)
    tune = np.asarray(tune_features, dtype=np.float64)
    if train.ndim != 2 or len(train) < 2:
        raise ValueError(f"the guard needs at least 2 training feature rows, got shape {train.shape}")
    if len(tune) < 1:
        raise ValueError("the guard needs tuning images to set its threshold")
    if not 50.0 <= percentile < 100.0:
        raise ValueError(f"guard percentile must be in [50, 100), got {percentile}")
    lw = LedoitWolf(assume_centered=False).fit(train)
    # precision = L L^T (Cholesky)  =>  d^2 = (f-m)^T L L^T (f-m) = ||(f-m) @ L||^2
    precision = (lw.precision_ + lw.precision_.T) / 2.0
    whitening = np.linalg.cholesky(precision)
    guard = InputGuard(
        mean=lw.location_,
        whitening=whitening,
        threshold=0.0,
        percentile=float(percentile),
        n_fit=len(train),
        n_threshold=len(tune),
        shrinkage=float(lw.shrinkage_),
    )
    scores = guard.score(tune)
    guard.threshold = float(np.percentile(scores, percentile))
    guard.tune_scores = {f"p{q}": float(np.percentile(scores, q)) for q in (5, 50, 95, 99)}
    return guard


def flag_rate(flags) -> float:
    flags = np.asarray(flags, dtype=bool)
    return float(flags.mean()) if flags.size else 0.0


def guard_drift(scores_ref, scores_new, threshold: float, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The input guard on the held-out split, FP32 model vs exported model (paired, same images):
    flag rates, their difference with a paired bootstrap CI, flag agreement, and the median
    relative change of the score. The gate bounds ``flag_rate_delta`` (an exported model whose
    features moved would start flagging ordinary frontal images)."""
    ref = np.asarray(scores_ref, dtype=np.float64)
    new = np.asarray(scores_new, dtype=np.float64)
    f_ref, f_new = ref > threshold, new > threshold
    n = len(ref)
    out = {
        "n_images": int(n),
        "threshold": float(threshold),
        "flag_rate_ref": flag_rate(f_ref),
        "flag_rate_new": flag_rate(f_new),
        "flag_rate_delta": flag_rate(f_new) - flag_rate(f_ref),
        "flag_rate_delta_ci": None,
        "agreement": float((f_ref == f_new).mean()) if n else None,
        "median_score_change": float(np.median((new - ref) / np.maximum(ref, 1e-12))) if n else None,
    }
    if n and n_boot > 0:
        rng = np.random.default_rng(seed)
        diff = f_new.astype(np.float64) - f_ref.astype(np.float64)
        boots = np.array([diff[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
        out["flag_rate_delta_ci"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    return out
