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
sort is needed. The same count matrices give every other bootstrap interval (sensitivity,
specificity, decision agreement, ECE) as ratios of weighted column sums, ``W @ X`` for a
per-image matrix ``X`` built once, so those intervals cost one matrix product per chunk of
resamples and use exactly the resamples of the AUC intervals.

Everything ``evaluate``, ``paired_auc_delta``, ``reliability_curve`` and ``box_coverage``
return is JSON-ready: plain Python floats and ints, ``None`` where a value is undefined (never
NaN). Conventions: a score counts as positive when ``score >= threshold`` (one threshold for
every label, or one per label); confidence intervals are percentile intervals over the
resamples in which the quantity is defined.
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


def _resolve_thresholds(threshold, n_labels: int) -> tuple[np.ndarray, float | list[float]]:
    """Per-label thresholds, shape (C,), and the value to report as the top-level ``threshold``:
    the scalar when one was given (so existing records keep their shape), else the list."""
    t = np.asarray(threshold, dtype=np.float64)
    if t.ndim == 0:
        vec, shown = np.full(n_labels, float(t)), float(t)
    elif t.shape == (n_labels,):
        vec = t.copy()
        shown = [float(v) for v in vec]
    else:
        raise ValueError(f"threshold must be one number or one per label ({n_labels} values), got shape {t.shape}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return vec, shown


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


def _bootstrap(
    sorted_sets: Sequence[Sequence[_SortedLabel]],
    n_rows: int,
    n_boot: int,
    seed,
    row_sums: np.ndarray | None = None,
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(C, n_boot) AUCs for each model in ``sorted_sets``, all on the same resamples.

    With ``row_sums`` (N, K), also returns the (n_boot, K) weighted column sums ``W @ row_sums``
    of those same resamples (None without): every count-ratio statistic of a resample (a
    sensitivity, an agreement, an ECE) is a function of them, so one matrix product per chunk
    replaces a loop over resamples, and the draws stay the ones the AUC intervals use.
    """
    outs = [np.full((len(s), n_boot), np.nan) for s in sorted_sets]
    sums = None if row_sums is None else np.full((n_boot, row_sums.shape[1]), np.nan)
    if n_boot == 0 or n_rows == 0:
        return outs, sums
    rng = np.random.default_rng(seed)
    start = 0
    for w in _bootstrap_weights(n_rows, n_boot, rng):
        stop = start + w.shape[0]
        for out, labels in zip(outs, sorted_sets):
            for c, lab in enumerate(labels):
                out[c, start:stop] = lab.auc(w)
        if sums is not None:
            sums[start:stop] = w @ row_sums
        start = stop
    return outs, sums


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0 (the quantity is undefined there)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _split_sums(sums: np.ndarray, k: int, n_labels: int) -> np.ndarray:
    """(B, k*C) column sums of k stacked (N, C) blocks -> (k, C, B)."""
    return sums.reshape(sums.shape[0], k, n_labels).transpose(1, 2, 0)


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
    return _bootstrap([_sorted_labels(yt, s["y_prob"], m)], yt.shape[0], int(n_boot), seed)[0][0]


def micro_auc(y_true: ArrayLike, y_prob: ArrayLike, mask: ArrayLike | None = None) -> float:
    """ROC AUC over all unmasked cells pooled into one list (NaN if they hold one class)."""
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    return float(auc_per_label(yt[m][:, None], s["y_prob"][m][:, None])[0])


def _bin_index(p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and each probability's bin: [lo, hi) except the last bin, which includes 1.0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)


def _ece_row_sums(yt: np.ndarray, p: np.ndarray, m: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """(N, n_bins + 1): per image, the sum of (p - y) over its unmasked cells in each bin, then
    its number of unmasked cells.

    ECE = sum over bins of count * |mean p - frequency| / cells = sum |sum(p - y)| / cells: the
    bin sums are linear in how often each image is drawn, so the ECE of every resample follows
    from ``W @ _ece_row_sums(...)`` (see ``_ece_from_sums``) with no per-resample binning.
    """
    n = p.shape[0]
    rows = np.broadcast_to(np.arange(n)[:, None], p.shape)[m]
    _, bins = _bin_index(p[m], n_bins)
    d = np.bincount(rows * n_bins + bins, weights=p[m] - yt[m], minlength=n * n_bins).reshape(n, n_bins)
    return np.hstack([d, m.sum(axis=1, keepdims=True).astype(np.float64)])


def _ece_from_sums(sums: np.ndarray) -> np.ndarray:
    """ECE of each row of (B, n_bins + 1) weighted sums of ``_ece_row_sums``; NaN with no cells."""
    return _ratio(np.abs(sums[:, :-1]).sum(axis=1), sums[:, -1])


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
    edges, bins = _bin_index(p, n_bins)
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


def _threshold_stats(yt: np.ndarray, p: np.ndarray, m: np.ndarray, thresholds: np.ndarray):
    """Per label at its own threshold (``thresholds`` is (C,) or a scalar): F1 (NaN when no
    positives and none predicted) and accuracy (NaN with no cells)."""
    pred = p >= thresholds
    pos = yt == 1
    tp = np.sum(m & pred & pos, axis=0)
    fp = np.sum(m & pred & ~pos, axis=0)
    fn = np.sum(m & ~pred & pos, axis=0)
    correct = np.sum(m & (pred == pos), axis=0)
    n = m.sum(axis=0)
    f1 = np.divide(2.0 * tp, 2 * tp + fp + fn, out=np.full(yt.shape[1], np.nan), where=(2 * tp + fp + fn) > 0)
    acc = np.divide(correct, n, out=np.full(yt.shape[1], np.nan), where=n > 0)
    return f1, acc


def _decision_columns(yt: np.ndarray, m: np.ndarray, *preds: np.ndarray) -> np.ndarray:
    """Per-image 0/1 blocks, each (N, C), stacked as (N, k*C): for each model's decisions
    ``pred`` its true positives, then the positives; for each model its true negatives, then
    the negatives. Column sums give sensitivity = TP / positives and specificity = TN /
    negatives, over the whole set (plain sums) or over every resample (``W @ columns``)."""
    pos = m & (yt == 1)
    neg = m & (yt == 0)
    blocks = [pos & pred for pred in preds] + [pos] + [neg & ~pred for pred in preds] + [neg]
    return np.hstack(blocks).astype(np.float64)


def evaluate(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    mask: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | np.random.Generator | None = 0,
    threshold: float | Sequence[float] | np.ndarray = DEFAULT_THRESHOLD,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> dict:
    """All headline metrics of one model, as a JSON-ready dict.

    ``threshold`` is one number for every label or a sequence with one per label column (an
    operating point fitted per finding, e.g. by ``mxa_edge.decision.operating.fit_thresholds``).

    - ``per_label[name]``: ``auc``, ``auc_ci`` ([lo, hi] or None), ``n_pos``, ``n_neg``,
      ``threshold`` (this label's), and at that threshold ``f1``, ``accuracy``,
      ``sensitivity`` / ``sensitivity_ci`` (None without positives) and ``specificity`` /
      ``specificity_ci`` (None without negatives). Their CIs use the resamples of
      ``auc_ci``, so an AUC interval and the sensitivity interval beside it describe the
      same uncertainty about the same images.
    - ``macro_auc``: mean AUC over ``labels_evaluated`` (labels with both classes among
      their unmasked rows); None when there are none. ``macro_auc_ci``: percentile interval
      of the per-resample mean over those labels (each resample averages the labels that
      have both classes in it).
    - ``micro_auc``: AUC of all unmasked cells pooled.
    - ``f1_macro``: mean F1 over ``labels_evaluated``.
    - ``accuracy``: mean per-label accuracy over labels with at least one unmasked cell.
    - ``ece``: expected calibration error, 15 equal-width bins, all unmasked cells pooled.
    - ``n_images``, ``labels_evaluated``, and the settings used (``threshold``: the number
      given, or the list of per-label thresholds; ``n_boot``, ``ci_level``).
    ``n_boot=0`` skips the bootstrap (every CI is None).
    """
    _check_boot_args(n_boot, ci_level)
    yt, m, s = _prepare(y_true, mask, y_prob=y_prob)
    p = s["y_prob"]
    _check_probabilities("y_prob", p, m)
    names = _resolve_labels(labels, yt.shape[1])
    thresholds, threshold_shown = _resolve_thresholds(threshold, yt.shape[1])
    n_labels = yt.shape[1]

    sorted_labels = _sorted_labels(yt, p, m)
    ones = np.ones((1, yt.shape[0]))
    auc = np.array([lab.auc(ones)[0] for lab in sorted_labels])
    columns = _decision_columns(yt, m, p >= thresholds)
    (boot,), boot_sums = _bootstrap([sorted_labels], yt.shape[0], int(n_boot), seed, row_sums=columns)
    tp, n_pos_f, tn, n_neg_f = _split_sums(columns.sum(axis=0, keepdims=True), 4, n_labels)[..., 0]
    sens, spec = _ratio(tp, n_pos_f), _ratio(tn, n_neg_f)
    b_tp, b_pos, b_tn, b_neg = _split_sums(boot_sums, 4, n_labels)
    sens_boot, spec_boot = _ratio(b_tp, b_pos), _ratio(b_tn, b_neg)
    f1, acc = _threshold_stats(yt, p, m, thresholds)
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
            "threshold": float(thresholds[c]),
            "sensitivity": _json_float(sens[c]),
            "sensitivity_ci": _ci(sens_boot[c], ci_level) if n_pos[c] else None,
            "specificity": _json_float(spec[c]),
            "specificity_ci": _ci(spec_boot[c], ci_level) if n_neg[c] else None,
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
        "threshold": threshold_shown,
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
    threshold: float | Sequence[float] | np.ndarray = DEFAULT_THRESHOLD,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> dict:
    """Compare a new (e.g. quantized) model against a reference on the SAME images.

    ``prob_ref`` / ``prob_new`` are probabilities in [0, 1]; ``threshold`` is one number or
    one per label column, the same for both models (the deployed operating point).

    Paired bootstrap: each resample is scored for both models, so every ``*_delta_ci`` is the
    interval of new - ref over the same resamples (the draw cancels out of the difference,
    which is what makes a small delta detectable). Returns a JSON-ready dict:

    - ``per_label[name]``: ``auc_ref``, ``auc_new``, ``delta`` (new - ref), ``delta_ci``
      ([lo, hi] or None), ``agreement_at_threshold`` (fraction of the label's unmasked cells
      where both models make the same 0/1 decision) and its ``agreement_ci``, ``n_pos``,
      ``n_neg``, ``threshold``; ``sensitivity_ref``, ``sensitivity_new``,
      ``sensitivity_delta``, ``sensitivity_delta_ci`` (None without positives) and the same
      four for ``specificity_*`` (None without negatives). AUC fields are None for labels
      with one class. A model can keep its AUC and still move its decisions (a shifted
      logit keeps the ranking), which only the threshold fields show.
    - ``macro_auc_ref``, ``macro_auc_new``, ``macro_delta`` (over ``labels_evaluated``) and
      ``macro_delta_ci`` (per-resample mean delta over those labels).
    - ``agreement_at_threshold``: the same fraction over all unmasked cells.
    - ``ece_ref``, ``ece_new`` (as ``evaluate``'s ``ece``), ``ece_delta`` (new - ref) and
      ``ece_delta_ci``; None when no cell is unmasked.
    - ``n_images``, ``labels_evaluated``, ``threshold`` (the number given, or the per-label
      list), ``n_boot``, ``ci_level``.
    ``n_boot=0`` skips the bootstrap (every CI is None).
    """
    _check_boot_args(n_boot, ci_level)
    yt, m, s = _prepare(y_true, mask, prob_ref=prob_ref, prob_new=prob_new)
    _check_probabilities("prob_ref", s["prob_ref"], m)
    _check_probabilities("prob_new", s["prob_new"], m)
    names = _resolve_labels(labels, yt.shape[1])
    thresholds, threshold_shown = _resolve_thresholds(threshold, yt.shape[1])
    n_labels = yt.shape[1]

    pred_ref, pred_new = s["prob_ref"] >= thresholds, s["prob_new"] >= thresholds
    same = pred_ref == pred_new
    # Per-image columns whose weighted sums give every threshold and calibration statistic:
    # [TP ref, TP new, positives, TN ref, TN new, negatives, same decision, cells] (8 blocks
    # of C), then the ECE sums of ref and of new (ECE_BINS + 1 each).
    decision = np.hstack([_decision_columns(yt, m, pred_ref, pred_new), m & same, m]).astype(np.float64)
    k = decision.shape[1]
    ece_width = ECE_BINS + 1
    columns = np.hstack(
        [decision, _ece_row_sums(yt, s["prob_ref"], m, ECE_BINS), _ece_row_sums(yt, s["prob_new"], m, ECE_BINS)]
    )

    ref_sorted = _sorted_labels(yt, s["prob_ref"], m)
    new_sorted = _sorted_labels(yt, s["prob_new"], m)
    ones = np.ones((1, yt.shape[0]))
    auc_ref = np.array([lab.auc(ones)[0] for lab in ref_sorted])
    auc_new = np.array([lab.auc(ones)[0] for lab in new_sorted])
    (boot_ref, boot_new), boot_sums = _bootstrap(
        [ref_sorted, new_sorted], yt.shape[0], int(n_boot), seed, row_sums=columns
    )
    boot_delta = boot_new - boot_ref
    evaluated = np.isfinite(auc_ref)  # both models see the same labels, so the same classes

    def threshold_rates(sums: np.ndarray):
        """(sens ref, sens new, spec ref, spec new, agreement), each (C, B), from (B, k) sums."""
        tp_r, tp_n, pos, tn_r, tn_n, neg, agree, cells = _split_sums(sums[:, :k], 8, n_labels)
        return _ratio(tp_r, pos), _ratio(tp_n, pos), _ratio(tn_r, neg), _ratio(tn_n, neg), _ratio(agree, cells)

    sens_ref, sens_new, spec_ref, spec_new, agree = (
        r[:, 0] for r in threshold_rates(decision.sum(axis=0, keepdims=True))
    )
    b_sens_ref, b_sens_new, b_spec_ref, b_spec_new, b_agree = threshold_rates(boot_sums)
    b_sens_delta, b_spec_delta = b_sens_new - b_sens_ref, b_spec_new - b_spec_ref
    b_ece_delta = _ece_from_sums(boot_sums[:, k + ece_width :]) - _ece_from_sums(boot_sums[:, k : k + ece_width])
    n_pos = np.sum(m & (yt == 1), axis=0)
    n_neg = np.sum(m & (yt == 0), axis=0)
    n_cells = m.sum(axis=0)

    per_label = {}
    for c, name in enumerate(names):
        ok = bool(evaluated[c])
        has_pos, has_neg = bool(n_pos[c]), bool(n_neg[c])
        per_label[name] = {
            "auc_ref": _json_float(auc_ref[c]),
            "auc_new": _json_float(auc_new[c]),
            "delta": _json_float(auc_new[c] - auc_ref[c]) if ok else None,
            "delta_ci": _ci(boot_delta[c], ci_level) if ok else None,
            "agreement_at_threshold": _json_float(agree[c]),
            "n_pos": int(n_pos[c]),
            "n_neg": int(n_neg[c]),
            "threshold": float(thresholds[c]),
            "agreement_ci": _ci(b_agree[c], ci_level) if n_cells[c] else None,
            "sensitivity_ref": _json_float(sens_ref[c]),
            "sensitivity_new": _json_float(sens_new[c]),
            "sensitivity_delta": _json_float(sens_new[c] - sens_ref[c]) if has_pos else None,
            "sensitivity_delta_ci": _ci(b_sens_delta[c], ci_level) if has_pos else None,
            "specificity_ref": _json_float(spec_ref[c]),
            "specificity_new": _json_float(spec_new[c]),
            "specificity_delta": _json_float(spec_new[c] - spec_ref[c]) if has_neg else None,
            "specificity_delta_ci": _ci(b_spec_delta[c], ci_level) if has_neg else None,
        }
    any_ok = evaluated.any()
    ece_ref = reliability_curve(yt, s["prob_ref"], m, n_bins=ECE_BINS)["ece"]
    ece_new = reliability_curve(yt, s["prob_new"], m, n_bins=ECE_BINS)["ece"]
    any_cell = ece_ref is not None
    return {
        "per_label": per_label,
        "macro_auc_ref": _json_float(auc_ref[evaluated].mean()) if any_ok else None,
        "macro_auc_new": _json_float(auc_new[evaluated].mean()) if any_ok else None,
        "macro_delta": _json_float((auc_new[evaluated] - auc_ref[evaluated]).mean()) if any_ok else None,
        "macro_delta_ci": _ci(_mean_over_finite(boot_delta[evaluated]), ci_level) if any_ok else None,
        "agreement_at_threshold": float(np.sum(m & same) / m.sum()) if m.any() else None,
        "ece_ref": ece_ref,
        "ece_new": ece_new,
        "ece_delta": float(ece_new - ece_ref) if any_cell else None,
        "ece_delta_ci": _ci(b_ece_delta, ci_level) if any_cell else None,
        "n_images": int(yt.shape[0]),
        "labels_evaluated": [name for name, ok in zip(names, evaluated) if ok],
        "threshold": threshold_shown,
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


BOX_METRICS = ("mean_coverage", "hit_rate", "mean_iou")


def _box_scores(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 3) per-box coverage, hit (0/1) and IoU of checked (N, 4) box arrays."""
    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    if np.any(gt_area <= 0):
        i = int(np.flatnonzero(gt_area <= 0)[0])
        raise ValueError(f"gt_boxes[{i}] = {gt[i].tolist()} has zero area; coverage of it is undefined")
    pred_area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    iw = np.clip(np.minimum(pred[:, 2], gt[:, 2]) - np.maximum(pred[:, 0], gt[:, 0]), 0, None)
    ih = np.clip(np.minimum(pred[:, 3], gt[:, 3]) - np.maximum(pred[:, 1], gt[:, 1]), 0, None)
    inter = iw * ih
    cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    hit = (pred[:, 0] <= cx) & (cx <= pred[:, 2]) & (pred[:, 1] <= cy) & (cy <= pred[:, 3])
    iou = inter / (pred_area + gt_area - inter)
    return np.stack([inter / gt_area, hit.astype(np.float64), iou], axis=1)


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
    scores = _box_scores(pred, gt)
    if len(gt) == 0:
        return {"mean_coverage": None, "hit_rate": None, "mean_iou": None, "n": 0}
    means = scores.mean(axis=0)
    return {**{k: float(v) for k, v in zip(BOX_METRICS, means)}, "n": int(len(gt))}


def random_boxes_like(pred_boxes: ArrayLike, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, N, 4) boxes of the same width and height as each of ``pred_boxes`` (N, 4), each at a
    position drawn uniformly among those that keep it inside the [0, 1] image: the chance level
    of a box that knows its size but not where the finding is."""
    pred = _as_boxes("pred_boxes", pred_boxes)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    size = pred[:, 2:] - pred[:, :2]  # (N, 2): w, h
    corner = rng.uniform(size=(draws, *size.shape)) * (1.0 - size)
    return np.concatenate([corner, corner + size], axis=-1)


def _candidate_scores(name: str, boxes: ArrayLike, gt: np.ndarray) -> np.ndarray:
    """Per-box scores (N, 3) of one candidate: (N, 4) boxes, or (R, N, 4) draws averaged per box."""
    b = np.asarray(boxes, dtype=np.float64)
    draws = b[None] if b.ndim == 2 else b
    if draws.ndim != 3 or draws.shape[1:] != gt.shape:
        raise ValueError(f"{name} must have shape {gt.shape} or (draws, *{gt.shape}), got {b.shape}")
    return np.mean([_box_scores(_as_boxes(name, d), gt) for d in draws], axis=0)


def localization_vs_baselines(
    gt_boxes: ArrayLike,
    image_index: ArrayLike,
    candidates: dict[str, ArrayLike],
    reference: str,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | np.random.Generator | None = 0,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> dict:
    """Coverage, hit rate and IoU of several box predictors on the same ground-truth boxes, each
    with a bootstrap CI, and each candidate's paired difference from ``reference``.

    ``gt_boxes`` (N, 4) may hold several boxes of one image; ``image_index`` (N,) says which
    image each belongs to, and the bootstrap resamples images (all their boxes together), the
    same resamples for every candidate, so the paired differences' CIs account for the
    candidates being scored on the same images. A candidate is (N, 4) boxes or (R, N, 4) draws
    (``random_boxes_like``), whose per-box scores are averaged over the draws first.

    Returns ``{name: {mean_coverage, mean_coverage_ci, hit_rate, hit_rate_ci, mean_iou,
    mean_iou_ci, n}}``; every candidate but the reference also has ``<reference>_minus_this``:
    ``{metric: {"delta", "ci"}}`` (the reference's value minus this candidate's: how far the
    reference beats it), plus ``n_images``, ``n_boot`` and ``ci_level``.
    """
    _check_boot_args(n_boot, ci_level)
    gt = _as_boxes("gt_boxes", gt_boxes)
    if reference not in candidates:
        raise ValueError(f"reference {reference!r} is not one of the candidates {sorted(candidates)}")
    idx = np.asarray(image_index)
    if idx.shape != (len(gt),):
        raise ValueError(f"image_index must have shape ({len(gt)},), one image per box, got {idx.shape}")
    images, rows = np.unique(idx, return_inverse=True)
    scores = {name: _candidate_scores(name, boxes, gt) for name, boxes in candidates.items()}
    if len(gt) == 0:
        return {name: {k: None for k in BOX_METRICS} | {"n": 0} for name in candidates}
    # Per image: the number of its boxes and, per candidate, the sums of their scores; a resample's
    # mean is then (W @ sums) / (W @ counts) with W the images' draw counts.
    names = list(scores)
    per_image = np.zeros((len(images), 1 + 3 * len(names)))
    np.add.at(per_image[:, 0], rows, 1.0)
    for j, name in enumerate(names):
        np.add.at(per_image[:, 1 + 3 * j : 4 + 3 * j], rows, scores[name])
    boot = np.full((int(n_boot), per_image.shape[1]), np.nan)
    rng = np.random.default_rng(seed)
    start = 0
    for w in _bootstrap_weights(len(images), int(n_boot), rng):
        boot[start : start + w.shape[0]] = w @ per_image
        start += w.shape[0]
    boot_means = {name: boot[:, 1 + 3 * j : 4 + 3 * j] / boot[:, :1] for j, name in enumerate(names)}

    out: dict = {}
    for name in names:
        means = scores[name].mean(axis=0)
        row: dict = {"n": int(len(gt))}
        for m, metric in enumerate(BOX_METRICS):
            row[metric] = float(means[m])
            row[f"{metric}_ci"] = _ci(boot_means[name][:, m], ci_level)
        if name != reference:
            ref_means = scores[reference].mean(axis=0)
            row[f"{reference}_minus_this"] = {
                metric: {
                    "delta": float(ref_means[m] - means[m]),
                    "ci": _ci(boot_means[reference][:, m] - boot_means[name][:, m], ci_level),
                }
                for m, metric in enumerate(BOX_METRICS)
            }
        out[name] = row
    out.update({"n_images": int(len(images)), "n_boot": int(n_boot), "ci_level": float(ci_level)})
    return out
