"""The input guard: "this image is not what I was trained on" (torch-free).

A model trained on frontal chest radiographs still returns 14 confident-looking numbers for a
lateral view, a film inverted by a MONOCHROME mix-up, a hand X-ray or a photographed document.
Every artifact therefore carries a guard, fitted at export. It measures two distances and
fuses them into one score:

* **features**: the exported graph's ``features`` output, the global-average-pooled output of
  every backbone stage concatenated (``MultiLabelStudent.forward_aux``), and its Mahalanobis
  distance to the training images' (Lee et al., NeurIPS 2018, "A simple unified framework for
  detecting out-of-distribution samples"), with scikit-learn's Ledoit-Wolf shrunk covariance:
  the feature dimension (hundreds) is not small against the number of training images, and an
  unshrunk inverse would blow up on directions the training set barely spans.
* **image statistics** (``image_statistics``): what the model's input looks like, whatever the
  model learned: the layout of light and dark (a 6x6 grid of block means), the gray-level
  quantiles, edge energy at two scales and left-right mirror symmetry; their Mahalanobis
  distance to the training images' the same way. Why both: on real films the features of a
  small model trained on a few hundred of them (or on two populations at once) call an
  inverted film or a smooth texture "a chest film" a third of the time, because nothing in
  training asked them to tell those apart. A chest film's layout (dark lungs either side of
  a bright spine and mediastinum, symmetric, bright below) and its gray-level histogram are
  what an inverted film, a texture and a document page change, and need no model to see.
* **score**: each distance divided by its median on the tuning split (so a typical
  in-distribution image scores about 1 in each), fused as their root mean square: the
  Mahalanobis distance over both blocks together, each block scaled alike. Lee et al. combine
  their layers' distances the same way, a weighted sum; the weights here are equal, because
  learning them would need examples of what a site will wrongly send, which nobody has.
* **threshold**: a percentile (default the 99th) of the scores of the *tuning* split, images
  the FP32 model never trained on but which are in distribution: about 1% of such images are
  flagged by construction. A run on several datasets (``--data A --data B``) takes the largest
  of each dataset's percentile, so no population it trained on is flagged more than that by
  construction (the pooled percentile would sit inside the larger, more uniform one). Nothing
  is fitted on the held-out split; the drift gate measures the guard there (flag rate of the
  FP32 model vs the exported one).

The fitted parameters (means, whitening matrices, scales) live in ``guard.npz`` inside the
artifact (hashed like every model file); ``predict`` computes the score with numpy from the
features the engine returns and the input it gave the engine, so the runtime stays torch-free.
Each distance is ``||(f - mean) @ W||`` with ``W`` the Cholesky factor of the precision matrix:
one matmul per batch. An artifact exported before the image statistics existed has a guard of
the features alone, and is scored as it was (its distance, its threshold).

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
IMAGE_STATISTICS = "image_statistics"  # the name ``with_image_statistics`` adds to a runner's outputs
DEFAULT_PERCENTILE = 99.0
MAX_FIT_IMAGES = 4000  # training images whose features fit the mean/covariance (a seeded sample beyond)
METHOD = "mahalanobis (Ledoit-Wolf covariance) on pooled stage features"
FUSED_METHOD = (
    "root mean square of two Mahalanobis distances (Ledoit-Wolf covariance), each divided by its "
    "tuning-split median: pooled stage features, and image statistics"
)

# The image statistics (``image_statistics``). Fixed here, not configurable: a guard's arrays
# are only meaningful for the statistics they were fitted on.
LAYOUT_GRID = 6  # block means on a 6x6 grid: where the film is light and dark
QUANTILES = (2, 10, 25, 50, 75, 90, 98)  # gray-level histogram, as percentiles
COARSE = 32  # the second scale of edge energy and the mirror symmetry
IMAGE_STATISTICS_VERSION = 1  # in guard.npz: a guard fitted on other statistics is refused, never mis-scored
IMAGE_STATISTICS_RULE = (
    f"{LAYOUT_GRID}x{LAYOUT_GRID} block means, gray-level percentiles {list(QUANTILES)}, log edge energy "
    f"(|dx|, |dy|) at the model's size and at {COARSE} px, left-right mirror correlation"
)


def _block_means(gray: np.ndarray, n: int) -> np.ndarray:
    """(N, S, S) -> (N, m, m) means over a grid of near-equal blocks, m = min(n, S)."""
    size = gray.shape[-1]
    m = min(n, size)
    edges = np.linspace(0, size, m + 1).round().astype(int)
    counts = np.diff(edges).astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(gray, edges[:-1], axis=1), edges[:-1], axis=2)
    return sums / np.outer(counts, counts)


def image_statistics(inputs, value_range) -> np.ndarray:
    """The guard's image statistics of a batch of model inputs ((N, 1, S, S) or (N, S, S) in
    ``value_range``, what the engine is given): float64 (N, K), K fixed by S. Gray levels are
    taken back to [0, 1] first, so the numbers read like the image."""
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim == 4:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"image statistics need square model inputs (N, 1, S, S), got {np.shape(inputs)}")
    lo, hi = value_range
    gray = (x - lo) / (hi - lo)
    n = len(gray)
    coarse = _block_means(gray, COARSE)
    centred = coarse - coarse.mean(axis=(1, 2), keepdims=True)
    mirror = (centred * centred[:, :, ::-1]).sum(axis=(1, 2)) / ((centred * centred).sum(axis=(1, 2)) + 1e-9)
    edges = [np.abs(np.diff(g, axis=axis)).mean(axis=(1, 2)) for g in (gray, coarse) for axis in (2, 1)]
    return np.concatenate(
        [
            _block_means(gray, LAYOUT_GRID).reshape(n, -1),
            np.percentile(gray.reshape(n, -1), QUANTILES, axis=1).T,
            np.log(np.stack(edges, axis=1) + 1e-4),
            mirror[:, None],
        ],
        axis=1,
    )


def with_image_statistics(run_batch, value_range):
    """A scoring runner (``decision.scoring``) that also returns each batch's image statistics as
    the ``IMAGE_STATISTICS`` output: one pass over images too many to hold as model input."""

    def run(batch):
        return {**run_batch(batch), IMAGE_STATISTICS: image_statistics(batch, value_range)}

    return run


@dataclass
class Mahalanobis:
    """A mean and a whitening matrix: ``distance(x) = ||(x - mean) @ whitening||``."""

    mean: np.ndarray  # (D,)
    whitening: np.ndarray  # (D, D): ||(x - mean) @ whitening||^2 = (x - mean)^T Sigma^-1 (x - mean)
    shrinkage: float | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, rows, what: str = "guard features") -> np.ndarray:
        f = np.asarray(rows, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"{what} must be (N, {self.dim}), got {f.shape}")
        return np.sqrt(np.square((f - self.mean) @ self.whitening).sum(axis=1))

    @classmethod
    def fit(cls, train) -> Mahalanobis:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf(assume_centered=False).fit(train)
        # precision = L L^T (Cholesky)  =>  d^2 = (f-m)^T L L^T (f-m) = ||(f-m) @ L||^2
        precision = (lw.precision_ + lw.precision_.T) / 2.0
        return cls(mean=lw.location_, whitening=np.linalg.cholesky(precision), shrinkage=float(lw.shrinkage_))


@dataclass
class InputGuard:
    """A fitted guard: ``score(features, inputs)`` fuses the features' and the image statistics'
    distances; above ``threshold`` an image is flagged as out of distribution. Without an
    ``image`` part (an artifact from before it existed) the score is the features' distance."""

    features: Mahalanobis
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    n_fit: int = 0  # training images the means/covariances were fitted on
    n_threshold: int = 0  # tuning images the threshold came from
    tune_scores: dict = field(default_factory=dict)  # quantiles of the tuning scores (for the report)
    image: Mahalanobis | None = None  # the image statistics' distance
    scales: tuple[float, float] | None = None  # tuning medians of (features, image) distances
    value_range: tuple[float, float] | None = None  # the model input's range (image statistics)
    threshold_groups: list[str] | None = None  # datasets whose percentiles the threshold is the largest of

    @property
    def dim(self) -> int:
        return self.features.dim

    @property
    def fused(self) -> bool:
        return self.image is not None

    def distances(self, features, inputs=None, statistics=None) -> dict[str, np.ndarray]:
        """Each part's distance: {"features": ..., "image": ...} (the latter when fused).
        ``inputs``: the model inputs the features came from; or their ``statistics``."""
        out = {"features": self.features.distance(features)}
        if self.image is not None:
            if statistics is None:
                if inputs is None:
                    raise ValueError("this input guard also scores the image: pass the model inputs")
                statistics = image_statistics(inputs, self.value_range)
            out["image"] = self.image.distance(statistics, "image statistics")
        return out

    def score(self, features, inputs=None, *, statistics=None) -> np.ndarray:
        d = self.distances(features, inputs, statistics)
        if self.image is None:
            return d["features"]
        s_features, s_image = self.scales
        return np.sqrt((np.square(d["features"] / s_features) + np.square(d["image"] / s_image)) / 2.0)

    def flags(self, features, inputs=None, *, statistics=None) -> np.ndarray:
        """True where the image is out of distribution (score above the threshold)."""
        return self.score(features, inputs, statistics=statistics) > self.threshold

    # --- storage -----------------------------------------------------------------------------

    def record(self, held_out: dict | None = None, challenge: dict | None = None) -> GuardRecord:
        """What the artifact manifest says about the guard (the arrays are in ``guard.npz``);
        ``held_out``: its measured flag rates (``guard_drift``), ``challenge``: kind -> {n, flagged}."""
        rule = f"{self.percentile:g}th percentile of the tuning split's scores (FP32 model)"
        if self.threshold_groups:
            rule += f"; the largest of each dataset's ({', '.join(self.threshold_groups)})"
        fused = self.image is not None
        return GuardRecord(
            file=GUARD_FILE,
            method=FUSED_METHOD if fused else METHOD,
            output=FEATURES_OUTPUT,
            feature_dim=self.dim,
            threshold=float(self.threshold),
            threshold_rule=rule,
            percentile=float(self.percentile),
            fitted_on={"mean_covariance": "train", "scales": "tune", "threshold": "tune"}
            if fused
            else {"mean_covariance": "train", "threshold": "tune"},
            n_fit=int(self.n_fit),
            n_threshold=int(self.n_threshold),
            shrinkage=self.features.shrinkage,
            tune_scores=dict(self.tune_scores),
            image_statistics=IMAGE_STATISTICS_RULE if fused else None,
            image_dim=self.image.dim if fused else None,
            scales={"features": float(self.scales[0]), "image": float(self.scales[1])} if fused else None,
            held_out=GuardFlagRates.optional(held_out),
            challenge=challenge,
        )

    def save(self, folder) -> str:
        path = Path(folder) / GUARD_FILE
        arrays = {"mean": self.features.mean, "whitening": self.features.whitening}
        if self.image is not None:
            arrays.update(
                image_mean=self.image.mean,
                image_whitening=self.image.whitening,
                scales=np.asarray(self.scales),
                value_range=np.asarray(self.value_range),
                statistics_version=np.asarray(IMAGE_STATISTICS_VERSION),
            )
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
        return GUARD_FILE

    @classmethod
    def load(cls, folder, record: GuardRecord) -> InputGuard:
        """The guard of an artifact folder (its file was hash-checked by ``load_artifact``)."""
        path = Path(folder) / record.file
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            features = Mahalanobis(arrays["mean"], arrays["whitening"], record.shrinkage)
            image = None
            if "image_mean" in arrays:
                version = int(arrays["statistics_version"])
                if version != IMAGE_STATISTICS_VERSION:
                    raise ArtifactError(
                        f"{path}: input guard fitted on image statistics version {version}, this mxa-edge "
                        f"computes version {IMAGE_STATISTICS_VERSION}; re-export the model or use the mxa-edge "
                        "that exported it"
                    )
                image = Mahalanobis(arrays["image_mean"], arrays["image_whitening"])
                scales, value_range = tuple(map(float, arrays["scales"])), tuple(map(float, arrays["value_range"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable input guard ({exc}); re-export the model") from None
        for part in (features, image):
            if part is not None and (part.mean.ndim != 1 or part.whitening.shape != (part.dim, part.dim)):
                raise ArtifactError(f"{path}: input guard arrays have inconsistent shapes; re-export the model")
        if image is not None and (len(scales) != 2 or len(value_range) != 2 or min(scales) <= 0):
            raise ArtifactError(f"{path}: input guard scales or value range malformed; re-export the model")
        return cls(
            features=features,
            threshold=float(record.threshold),
            percentile=float(DEFAULT_PERCENTILE if record.percentile is None else record.percentile),
            n_fit=int(record.n_fit),
            n_threshold=int(record.n_threshold),
            tune_scores=dict(record.tune_scores or {}),
            image=image,
            scales=scales if image is not None else None,
            value_range=value_range if image is not None else None,
        )


def load_guard(artifact) -> InputGuard | None:
    """The input guard of a loaded artifact (``formats.Artifact``), its file read through
    ``Artifact.member`` (listed and hash-checked), or None for an artifact without one."""
    record = artifact.manifest.guard
    if record is None:
        return None
    path = artifact.member(record.file)
    return InputGuard.load(path.parent, replace(record, file=path.name))


def _threshold(scores: np.ndarray, percentile: float, groups) -> tuple[float, list[str] | None]:
    """The ``percentile`` of ``scores``; with ``groups`` (a dataset name per row, several
    names), the largest of each group's."""
    names = list(dict.fromkeys(groups)) if groups is not None else []
    if len(names) < 2:
        return float(np.percentile(scores, percentile)), None
    groups = np.asarray(groups)
    return max(float(np.percentile(scores[groups == g], percentile)) for g in names), names


def fit_guard(
    train_features,
    tune_features,
    percentile: float = DEFAULT_PERCENTILE,
    *,
    train_statistics=None,
    tune_statistics=None,
    value_range=None,
    tune_groups=None,
) -> InputGuard:
    """Mean and Ledoit-Wolf covariance from ``train_features`` (and from ``train_statistics``,
    the training images' ``image_statistics``, when given: the fused guard); scales and the
    threshold from the tuning rows (images the model did not train on): ``percentile`` of their
    scores, the largest of each ``tune_groups`` dataset's when there are several."""
    train = np.asarray(train_features, dtype=np.float64)
    tune = np.asarray(tune_features, dtype=np.float64)
    if train.ndim != 2 or len(train) < 2:
        raise ValueError(f"the guard needs at least 2 training feature rows, got shape {train.shape}")
    if len(tune) < 1:
        raise ValueError("the guard needs tuning images to set its threshold")
    if not 50.0 <= percentile < 100.0:
        raise ValueError(f"guard percentile must be in [50, 100), got {percentile}")
    if (train_statistics is None) != (tune_statistics is None) or (
        train_statistics is not None and value_range is None
    ):
        raise ValueError("the image part needs the training and tuning images' statistics and the value range")
    guard = InputGuard(
        features=Mahalanobis.fit(train),
        threshold=0.0,
        percentile=float(percentile),
        n_fit=len(train),
        n_threshold=len(tune),
    )
    if train_statistics is not None:
        guard.image = Mahalanobis.fit(np.asarray(train_statistics, dtype=np.float64))
        guard.value_range = (float(value_range[0]), float(value_range[1]))
        parts = guard.distances(tune, statistics=tune_statistics)
        guard.scales = tuple(max(float(np.median(parts[k])), 1e-12) for k in ("features", "image"))
    scores = guard.score(tune, statistics=tune_statistics)
    guard.threshold, guard.threshold_groups = _threshold(scores, percentile, tune_groups)
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
