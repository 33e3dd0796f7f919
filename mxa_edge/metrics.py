"""Evaluation metrics for multi-label chest X-ray classifiers (numpy only).

Every function takes ``y_true`` (N, C) in {0, 1}, scores ``y_prob`` (N, C) and an optional
``mask`` (N, C) in {0, 1}, where 0 excludes a cell (an uncertain label that is ignored, or a
blank one). Masked cells of ``y_true`` / ``y_prob`` may hold anything (-1, NaN): they are
never read. Labels default to ``CHEXPERT_LABELS`` when C == 14 and must be passed otherwise.

ROC AUC is the Mann-Whitney statistic with tied scores counted as one half, which is exactly
what ``sklearn.metrics.roc_auc_score`` computes (average ranks). The bootstrap resamples
images (rows) with replacement, the same resample for every label and, in
``paired_auc_delta``, for both models, so macro and paired confidence intervals are coherent.
A resample is represented by how many times it draws each row; the AUC of a resample is then
a weighted Mann-Whitney statistic over the rows sorted once per label, so no per-resample
sort is needed.

Everything ``evaluate``, ``paired_auc_delta``, ``reliability_curve`` and ``box_coverage``
return is JSON-ready: plain Python floats and ints, ``None`` where a value is undefined (never
NaN). Conventions: a score counts as positive when ``score >= threshold``; confidence
intervals are percentile intervals over the resamples in which the quantity is defined.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from mxa_edge.labels import CHEXPERT_LABELS

DEFAULT_N_BOOT = 1000
DEFAULT_THRESHOLD = 0.5
DEFAULT_CI_LEVEL = 0.95
ECE_BINS = 15

# Bootstrap count matrices are built this many cells at a time (n_resamples x N), so memory
# stays bounded on large evaluation sets. The chunking depends only on N, so a result
# depends only on the data and the seed.
_BOOT_CHUNK_CELLS = 4_000_000


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def sigmoid(logits) -> np.ndarray:
    """Logits -> probabilities, float64, without overflow for any logit (the one definition:
    training, evaluation, the drift gate, the report and predict all use it)."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _as_2d(name: str, x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N images, C labels) but has shape {a.shape}; "
            "for a single label pass it as shape (N, 1), e.g. x.reshape(-1, 1)"
        )
    return a


def _check_same_shape(ref_name: str, ref: np.ndarray, name: str, a: np.ndarray) -> None:
    if a.shape != ref.shape:
        raise ValueError(f"{name} has shape {a.shape} but {ref_name} has shape {ref.shape}; they must match (N, C)")


def _prepare(
    y_true: ArrayLike, mask: ArrayLike | None, **scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Validate inputs; return (y_true, mask, scores) with masked cells zeroed.

    y_true comes back as float64 0/1, mask as bool, each score array as float64.
    """
    yt = _as_2d("y_true", y_true)
    arrays = {}
    for name, s in scores.items():
        arrays[name] = _as_2d(name, s)
        _check_same_shape("y_true", yt, name, arrays[name])
    if mask is None:
        m = np.ones(yt.shape, dtype=bool)
    else:
        mf = _as_2d("mask", mask)
        _check_same_shape("y_true", yt, "mask", mf)
        if not np.all((mf == 0) | (mf == 1)):
            raise ValueError("mask must hold only 0 (excluded) and 1 (evaluated)")
        m = mf == 1

    bad = m & ~((yt == 0) | (yt == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"y_true must be 0 or 1 on every evaluated cell; found {yt[r, c]!r} at row {r}, column {c}. "
            "Exclude uncertain (-1) or blank (NaN) labels with mask=0 for those cells"
        )
    yt = np.where(m, yt, 0.0)
    for name, a in arrays.items():
        bad = m & ~np.isfinite(a)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{name} must be finite on every evaluated cell; found {a[r, c]!r} at row {r}, column {c}")
        arrays[name] = np.where(m, a, 0.0)
    return yt, m, arrays


def _check_probabilities(name: str, p: np.ndarray, m: np.ndarray) -> None:
    if np.any(m & ((p < 0) | (p > 1))):
        raise ValueError(f"{name} must be probabilities in [0, 1] here (apply a sigmoid to logits first)")


def _resolve_labels(labels: Sequence[str] | None, n_labels: int) -> tuple[str, ...]:
    if labels is None:
        if n_labels == len(CHEXPERT_LABELS):
            return CHEXPERT_LABELS
        raise ValueError(
            f"the arrays have {n_labels} label columns, not the {len(CHEXPERT_LABELS)} CheXpert findings; "
            "pass labels=[...] naming each column"
        )
    names = tuple(labels)
    if len(names) != n_labels:
        raise ValueError(f"labels names {len(names)} columns but the arrays have {n_labels}")
    if len(set(names)) != len(names):
        raise ValueError("labels must be unique")
    return names


def _check_boot_args(n_boot: int, ci_level: float = DEFAULT_CI_LEVEL) -> None:
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")


# --------------------------------------------------------------------------------------
# Weighted Mann-Whitney AUC (the core of both the point estimate and the bootstrap)
# --------------------------------------------------------------------------------------


class _SortedLabel:
    """One label's evaluated rows sorted by score, with the start of each run of tied scores."""

    def __init__(self, y: np.ndarray, s: np.ndarray, rows: np.ndarray):
        order = np.argsort(s, kind="mergesort")
        s_sorted = s[order]
        self.rows = rows[order]
        self.y = y[order]
        self.tie_starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) if len(s) else np.empty(0, int)

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """AUC for each row of ``weights`` (B, N): how often each image is drawn."""
        out = np.full(weights.shape[0], np.nan)
        if len(self.rows) == 0:
            return out
        w = weights[:, self.rows]
        pos = np.add.reduceat(w * self.y, self.tie_starts, axis=1)  # (B, tie groups)
        neg = np.add.reduceat(w * (1.0 - self.y), self.tie_starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        # Each positive beats the negatives scored strictly lower and ties half of its group.
        num = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        ok = (n_pos > 0) & (n_neg > 0)
        out[ok] = num[ok] / (n_pos[ok] * n_neg[ok])
        return out


def _sorted_labels(yt: np.ndarray, s: np.ndarray, m: np.ndarray) -> list[_SortedLabel]:
    out = []
    for c in range(yt.shape[1]):
        rows = np.flatnonzero(m[:, c])
        out.append(_SortedLabel(yt[rows, c], s[rows, c], rows))
    return out


def _bootstrap_weights(n_rows: int, n_boot: int, rng: np.random.Generator):
    """Yield (B_chunk, n_rows) count matrices: row b says how often resample b draws each image."""
    chunk = max(1, _BOOT_CHUNK_CELLS // max(n_rows, 1))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n_rows, size=(b, n_rows))
        flat = (idx + (np.arange(b) * n_rows)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n_rows).reshape(b, n_rows).astype(np.float64)
        done += b


def _bootstrap(sorted_sets: Sequence[Sequence[_SortedLabel]], n_rows: int, n_boot: int, seed) -> list[np.ndarray]:
    """(C, n_boot) AUCs for each model in ``sorted_sets``, all on the same resamples."""
    outs = [np.full((len(s), n_boot), np.nan) for s in sorted_sets]
    if n_boot == 0 or n_rows == 0:
        return outs
    rng = np.random.default_rng(seed)
    start = 0
    for w in _bootstrap_weights(n_rows, n_boot, rng):
        stop = start + w.shape[0]
        for out, labels in zip(outs, sorted_sets):
            for c, lab in enumerate(labels):
                out[c, start:stop] = lab.auc(w)
        start = stop
    return outs


def _ci(samples: np.ndarray, level: float) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def _mean_over_finite(values: np.ndarray) -> np.ndarray:
    """Column means of ``values`` (k, B) over finite entries; NaN for columns with none."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    out = np.full(values.shape[1:], np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _json_float(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def auc_per_label(y_true: ArrayLike, y_prob: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """ROC AUC of each label column over its unmasked rows: shape (C,).

    Ties are handled as in sklearn's roc_auc_score. NaN where a label has only one class
    (or no rows) among its unmasked rows. Scores may be probabilities or logits.
    """
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    ones = np.ones((1, yt.shape[0]))
    return np.array([lab.auc(ones)[0] for lab in _sorted_labels(yt, s["y_prob"], m)])


def bootstrap_auc(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    mask: ArrayLike | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Bootstrap AUCs, shape (C, n_boot).

    Each resample draws N images with replacement, the same draw for every label. An entry
    is NaN where that resample leaves the label with one class. ``seed`` is an int or a
    ``np.random.Generator`` (consumed, not copied).
    """
    _check_boot_args(n_boot)
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    return _bootstrap([_sorted_labels(yt, s["y_prob"], m)], yt.shape[0], int(n_boot), seed)[0]


def micro_auc(y_true: ArrayLike, y_prob: ArrayLike, mask: ArrayLike | None = None) -> float:
    """ROC AUC over all unmasked cells pooled into one list (NaN if they hold one class)."""
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    return float(auc_per_label(yt[m][:, None], s["y_prob"][m][:, None])[0])


def reliability_curve(
    y_true: ArrayLike, y_prob: ArrayLike, mask: ArrayLike | None = None, n_bins: int = ECE_BINS
) -> dict:
    """Calibration over all unmasked cells pooled, in ``n_bins`` equal-width bins on [0, 1].

    Bins are [lo, hi) except the last, which includes 1.0. Returns lists of length n_bins:
    ``bin_centers``, ``mean_predicted`` and ``observed_frequency`` (None for empty bins),
    ``counts``; plus ``bin_edges`` (n_bins + 1), ``ece`` (the count-weighted mean of
    |mean_predicted - observed_frequency|; None with no cells) and ``n`` (cells used).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    _check_probabilities("y_prob", s["y_prob"], m)
    p = s["y_prob"][m]
    y = yt[m]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    filled = counts > 0
    mean_p = np.divide(sum_p, counts, out=np.full(n_bins, np.nan), where=filled)
    freq = np.divide(sum_y, counts, out=np.full(n_bins, np.nan), where=filled)
    ece = float(np.sum(counts[filled] * np.abs(mean_p[filled] - freq[filled])) / p.size) if p.size else None
    return {
        "bin_edges": [float(e) for e in edges],
        "bin_centers": [float(c) for c in (edges[:-1] + edges[1:]) / 2],
        "mean_predicted": [_json_float(v) for v in mean_p],
        "observed_frequency": [_json_float(v) for v in freq],
        "counts": [int(c) for c in counts],
        "ece": ece,
        "n": int(p.size),
    }


def _threshold_stats(yt: np.ndarray, p: np.ndarray, m: np.ndarray, threshold: float):
    """Per label: F1 (NaN when no positives and none predicted) and accuracy (NaN with no cells)."""
    pred = p >= threshold
    pos = yt == 1
    tp = np.sum(m & pred & pos, axis=0)
    fp = np.sum(m & pred & ~pos, axis=0)
    fn = np.sum(m & ~pred & pos, axis=0)
    correct = np.sum(m & (pred == pos), axis=0)
    n = m.sum(axis=0)
    f1 = np.divide(2.0 * tp, 2 * tp + fp + fn, out=np.full(yt.shape[1], np.nan), where=(2 * tp + fp + fn) > 0)
    acc = np.divide(correct, n, out=np.full(yt.shape[1], np.nan), where=n > 0)
    return f1, acc


def evaluate(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    mask: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | np.random.Generator | None = 0,
    threshold: float = DEFAULT_THRESHOLD,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> dict:
    """All headline metrics of one model, as a JSON-ready dict.

    - ``per_label[name]``: ``auc``, ``auc_ci`` ([lo, hi] or None), ``n_pos``, ``n_neg``,
      ``f1`` and ``accuracy`` at ``threshold`` (None where undefined).
    - ``macro_auc``: mean AUC over ``labels_evaluated`` (labels with both classes among
      their unmasked rows); None when there are none. ``macro_auc_ci``: percentile interval
      of the per-resample mean over those labels (each resample averages the labels that
      have both classes in it).
    - ``micro_auc``: AUC of all unmasked cells pooled.
    - ``f1_macro``: mean F1 over ``labels_evaluated``.
    - ``accuracy``: mean per-label accuracy over labels with at least one unmasked cell.
    - ``ece``: expected calibration error, 15 equal-width bins, all unmasked cells pooled.
    - ``n_images``, ``labels_evaluated``, and the settings used (``threshold``, ``n_boot``,
      ``ci_level``).
    ``n_boot=0`` skips the bootstrap (every CI is None).
    """
    _check_boot_args(n_boot, ci_level)
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    p = s["y_prob"]
    _check_probabilities("y_prob", p, m)
    names = _resolve_labels(labels, yt.shape[1])

    sorted_labels = _sorted_labels(yt, p, m)
    ones = np.ones((1, yt.shape[0]))
    auc = np.array([lab.auc(ones)[0] for lab in sorted_labels])
    boot = _bootstrap([sorted_labels], yt.shape[0], int(n_boot), seed)[0]
    f1, acc = _threshold_stats(yt, p, m, threshold)
    n_pos = np.sum(m & (yt == 1), axis=0)
    n_neg = np.sum(m & (yt == 0), axis=0)
    evaluated = np.isfinite(auc)

    per_label = {}
    for c, name in enumerate(names):
        per_label[name] = {
            "auc": _json_float(auc[c]),
            "auc_ci": _ci(boot[c], ci_level) if evaluated[c] else None,
            "n_pos": int(n_pos[c]),
            "n_neg": int(n_neg[c]),
            "f1": _json_float(f1[c]),
            "accuracy": _json_float(acc[c]),
        }
    has_cells = np.isfinite(acc)
    return {
        "per_label": per_label,
        "macro_auc": _json_float(auc[evaluated].mean()) if evaluated.any() else None,
        "macro_auc_ci": _ci(_mean_over_finite(boot[evaluated]), ci_level) if evaluated.any() else None,
        "micro_auc": _json_float(micro_auc(yt, p, m)) if m.any() else None,
        "f1_macro": _json_float(f1[evaluated].mean()) if evaluated.any() else None,
        "accuracy": _json_float(acc[has_cells].mean()) if has_cells.any() else None,
        "ece": reliability_curve(yt, p, m, n_bins=ECE_BINS)["ece"],
        "n_images": int(yt.shape[0]),
        "labels_evaluated": [name for name, ok in zip(names, evaluated) if ok],
        "threshold": float(threshold),
        "n_boot": int(n_boot),
        "ci_level": float(ci_level),
    }


def paired_auc_delta(
    y_true: ArrayLike,
    prob_ref: ArrayLike,
    prob_new: ArrayLike,
    mask: ArrayLike | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | np.random.Generator | None = 0,
    labels: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> dict:
    """Compare a new (e.g. quantized) model against a reference on the SAME images.

    Paired bootstrap: each resample is scored for both models, so ``delta_ci`` is the
    interval of AUC_new - AUC_ref over the same resamples. Returns a JSON-ready dict:

    - ``per_label[name]``: ``auc_ref``, ``auc_new``, ``delta`` (new - ref), ``delta_ci``
      ([lo, hi] or None), ``agreement_at_threshold`` (fraction of the label's unmasked cells
      where both models make the same 0/1 decision), ``n_pos``, ``n_neg``. AUC fields are
      None for labels with one class.
    - ``macro_auc_ref``, ``macro_auc_new``, ``macro_delta`` (over ``labels_evaluated``) and
      ``macro_delta_ci`` (per-resample mean delta over those labels).
    - ``agreement_at_threshold``: the same fraction over all unmasked cells.
    - ``n_images``, ``labels_evaluated``, ``threshold``, ``n_boot``, ``ci_level``.
    """
    _check_boot_args(n_boot, ci_level)
    yt, m, s = _prepare(y_true, mask, prob_ref=prob_ref, prob_new=prob_new)
    names = _resolve_labels(labels, yt.shape[1])

    ref_sorted = _sorted_labels(yt, s["prob_ref"], m)
    new_sorted = _sorted_labels(yt, s["prob_new"], m)
    ones = np.ones((1, yt.shape[0]))
    auc_ref = np.array([lab.auc(ones)[0] for lab in ref_sorted])
    auc_new = np.array([lab.auc(ones)[0] for lab in new_sorted])
    boot_ref, boot_new = _bootstrap([ref_sorted, new_sorted], yt.shape[0], int(n_boot), seed)
    boot_delta = boot_new - boot_ref
    evaluated = np.isfinite(auc_ref)  # both models see the same labels, so the same classes

    same = (s["prob_ref"] >= threshold) == (s["prob_new"] >= threshold)
    n_cells = m.sum(axis=0)
    agree = np.divide(np.sum(m & same, axis=0), n_cells, out=np.full(yt.shape[1], np.nan), where=n_cells > 0)
    n_pos = np.sum(m & (yt == 1), axis=0)
    n_neg = np.sum(m & (yt == 0), axis=0)

    per_label = {}
    for c, name in enumerate(names):
        ok = bool(evaluated[c])
        per_label[name] = {
            "auc_ref": _json_float(auc_ref[c]),
            "auc_new": _json_float(auc_new[c]),
            "delta": _json_float(auc_new[c] - auc_ref[c]) if ok else None,
            "delta_ci": _ci(boot_delta[c], ci_level) if ok else None,
            "agreement_at_threshold": _json_float(agree[c]),
            "n_pos": int(n_pos[c]),
            "n_neg": int(n_neg[c]),
        }
    any_ok = evaluated.any()
    return {
        "per_label": per_label,
        "macro_auc_ref": _json_float(auc_ref[evaluated].mean()) if any_ok else None,
        "macro_auc_new": _json_float(auc_new[evaluated].mean()) if any_ok else None,
        "macro_delta": _json_float((auc_new[evaluated] - auc_ref[evaluated]).mean()) if any_ok else None,
        "macro_delta_ci": _ci(_mean_over_finite(boot_delta[evaluated]), ci_level) if any_ok else None,
        "agreement_at_threshold": float(np.sum(m & same) / m.sum()) if m.any() else None,
        "n_images": int(yt.shape[0]),
        "labels_evaluated": [name for name, ok in zip(names, evaluated) if ok],
        "threshold": float(threshold),
        "n_boot": int(n_boot),
        "ci_level": float(ci_level),
    }


def _as_boxes(name: str, boxes: ArrayLike) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as [x1, y1, x2, y2] rows, got shape {b.shape}")
    if not np.all(np.isfinite(b)) or np.any((b < 0) | (b > 1)):
        raise ValueError(f"{name} must hold finite normalized coordinates in [0, 1]")
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        i = int(np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0])
        raise ValueError(f"{name}[{i}] = {b[i].tolist()} is not [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2")
    return b


def box_coverage(pred_boxes: ArrayLike, gt_boxes: ArrayLike) -> dict:
    """How well one predicted box per image localizes one ground-truth box.

    Boxes are normalized [x1, y1, x2, y2], shape (N, 4). Per image: coverage = area of the
    ground-truth box inside the predicted box / ground-truth area; hit = the ground-truth
    centre lies inside the predicted box (edges included); IoU. Returns ``mean_coverage``,
    ``hit_rate``, ``mean_iou`` (None when N == 0) and ``n``.
    """
    pred = _as_boxes("pred_boxes", pred_boxes)
    gt = _as_boxes("gt_boxes", gt_boxes)
    if pred.shape != gt.shape:
        raise ValueError(f"pred_boxes has shape {pred.shape} but gt_boxes has shape {gt.shape}; one box per image each")
    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    if np.any(gt_area <= 0):
        i = int(np.flatnonzero(gt_area <= 0)[0])
        raise ValueError(f"gt_boxes[{i}] = {gt[i].tolist()} has zero area; coverage of it is undefined")
    if len(gt) == 0:
        return {"mean_coverage": None, "hit_rate": None, "mean_iou": None, "n": 0}
    pred_area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    iw = np.clip(np.minimum(pred[:, 2], gt[:, 2]) - np.maximum(pred[:, 0], gt[:, 0]), 0, None)
    ih = np.clip(np.minimum(pred[:, 3], gt[:, 3]) - np.maximum(pred[:, 1], gt[:, 1]), 0, None)
    inter = iw * ih
    cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    hit = (pred[:, 0] <= cx) & (cx <= pred[:, 2]) & (pred[:, 1] <= cy) & (cy <= pred[:, 3])
    iou = inter / (pred_area + gt_area - inter)
    return {
        "mean_coverage": float(np.mean(inter / gt_area)),
        "hit_rate": float(np.mean(hit)),
        "mean_iou": float(np.mean(iou)),
        "n": int(len(gt)),
    }
