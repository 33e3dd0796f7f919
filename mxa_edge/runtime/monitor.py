"""``mxa-edge monitor``: site-level drift alarms from the DICOM node's audit log (torch-free).

The audit log (``mxa-edge serve``) is JSON lines, one event per line (``received``,
``predicted``, ``skipped``, ``sent``, ``send_failed``, ``started``), one ``predicted`` event per
image. Per UTC day this module counts studies, images, the input guard's flag rate (share of
``predicted`` images with ``in_distribution`` false; null means no guard and is left out),
each finding's positive rate, p50/p95 latency of ``sent`` events and send failures.

Expected rates, each a count ``x0`` of ``n0`` or a rate known by construction:

* the guard's flag rate: from the artifact (``--model``), ``1 - percentile/100`` of the guard's
  threshold rule (the threshold is that percentile of the tuning images' scores, so new
  in-distribution images are flagged at that rate by construction); the held-out flag rate the
  export measured is shown beside it, not tested against (a few hundred images);
* a finding's positive rate at its threshold: from the artifact's decision rule, the tuning
  split's share of images at or above the threshold, ``sens * n_pos + (1 - spec) * n_neg`` of
  ``n_pos + n_neg`` (the rule records sensitivity, specificity and counts per finding; findings
  whose threshold fell back record none and come from the baseline days);
* otherwise the pooled rate of the first ``--baseline-days`` days, which are then not tested.

Alarm tests, per tested day, family-wise false-alarm rate ``alpha`` per day (Bonferroni: each
test at ``alpha / m``, m = the day's tests, the CUSUM counted as one):

* flag rate above expected: one-sided exact binomial test, P(X >= x | n, p0), when p0 is known
  by construction; when the expected rate is itself a count (baseline days, tuning split),
  the one-sided exact conditional test of two binomial proportions (Fisher's exact test:
  hypergeometric tail given the pooled count), which accounts for the reference's own noise;
* each finding's positive rate different from expected: the same tests two-sided (twice the
  smaller tail, capped at 1);
* slow drift of the flag rate: a one-sided Bernoulli CUSUM against a doubling (p1 = 2 p0):
  S_d = max(0, S_{d-1} + x_d - k n_d), k = log((1-p0)/(1-p1)) / log(p1(1-p0) / (p0(1-p1)))
  (the reference flag rate between p0 and p1, in flagged images per image), alarm when
  S_d > h flagged images, then S restarts at 0. h is the smallest value on a 0.25 grid whose
  in-control false-alarm rate per day is at most alpha / m, measured by simulation (seeded) at
  the median daily image count; when p0 is a count x0 of n0 each simulated chain redraws it
  (Binomial(n0, p0) / n0), so h also covers the error of the estimate.

Any alarm: the command exits ``ALARM_EXIT`` with one line per alarm (day, metric, observed vs
expected, p-value).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from mxa_edge.support.errors import ConfigError, DatasetError

ALARM_EXIT = 11
CUSUM_SHIFT = 2.0  # the CUSUM is tuned to detect the flag rate doubling
CUSUM_SEED = 0
EVENTS = ("received", "predicted", "skipped", "sent", "send_failed", "started")
FLAG = "flag rate"


# ---------------------------------------------------------------------------- exact tails


def _logsumexp(a: np.ndarray) -> float:
    if a.size == 0:
        return -math.inf
    m = float(np.max(a))
    return m if m == -math.inf else m + math.log(float(np.sum(np.exp(a - m))))


def _log_binom_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    with np.errstate(divide="ignore"):
        logp, logq = (math.log(p) if p > 0 else -math.inf), (math.log1p(-p) if p < 1 else -math.inf)
        kl = np.where(k > 0, k * logp, 0.0)
        ql = np.where(n - k > 0, (n - k) * logq, 0.0)
    return math.lgamma(n + 1) - lg(k + 1) - lg(n - k + 1) + kl + ql


def binom_sf(x: int, n: int, p: float) -> float:
    """P(X >= x), X ~ Binomial(n, p), exact (log-space sum)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    return min(1.0, math.exp(_logsumexp(_log_binom_pmf(np.arange(x, n + 1), n, p))))


def binom_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x), X ~ Binomial(n, p)."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    return min(1.0, math.exp(_logsumexp(_log_binom_pmf(np.arange(0, x + 1), n, p))))


def _log_hyper_pmf(k: np.ndarray, big_n: int, t: int, n: int) -> np.ndarray:
    """log P(X = k), X = successes among n drawn from big_n holding t successes."""

    def lc(a, b):
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)

    return np.array([lc(t, int(i)) + lc(big_n - t, n - int(i)) - lc(big_n, n) for i in k], dtype=np.float64)


def fisher_tails(x: int, n: int, x0: int, n0: int) -> tuple[float, float]:
    """(P(X <= x), P(X >= x)) for the day's count x of n given the pooled count with the
    reference x0 of n0: the exact conditional test that both are Binomial with one rate."""
    t, big_n = x + x0, n + n0
    lo, hi = max(0, t - n0), min(t, n)
    log_all = _log_hyper_pmf(np.arange(lo, hi + 1), big_n, t, n)
    i = x - lo
    return min(1.0, math.exp(_logsumexp(log_all[: i + 1]))), min(1.0, math.exp(_logsumexp(log_all[i:])))


def binom_quantile(q: float, n: int, p: float) -> int:
    """Smallest x with P(X <= x) >= q."""
    for x in range(n + 1):
        if binom_cdf(x, n, p) >= q:
            return x
    return n


# ---------------------------------------------------------------------------- reading the log


@dataclass
class DayStats:
    date: str
    studies: int = 0
    images: int = 0
    guarded: int = 0  # predicted images with in_distribution true/false
    flagged: int = 0  # ... false
    positives: dict = field(default_factory=dict)  # label -> images positive
    scored: int = 0  # predicted images that list positives
    sent: int = 0
    send_failures: int = 0
    skipped: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None

    @property
    def flag_rate(self) -> float | None:
        return self.flagged / self.guarded if self.guarded else None

    def to_dict(self) -> dict:
        return {**asdict(self), "flag_rate": self.flag_rate}


def _utc_day(stamp, where: str) -> date:
    if not isinstance(stamp, str):
        raise DatasetError(f"{where}: no 'time' (ISO-8601 UTC) in the event")
    text = stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DatasetError(f"{where}: time {stamp!r} is not ISO-8601") from exc
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.date()  # a time without offset is UTC by the log's contract


def read_events(paths) -> tuple[list[tuple[date, dict]], list[str]]:
    """Every event of the log files with its UTC day, and notes on lines not understood."""
    events, unknown = [], {}
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read the audit log ({exc.strerror})") from exc
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{where}: not a JSON event ({exc.msg}); is this an `mxa-edge serve` audit log?"
                ) from exc
            if not isinstance(ev, dict):
                raise DatasetError(f"{where}: not a JSON object")
            kind = ev.get("event")
            if kind not in EVENTS:
                unknown[kind] = unknown.get(kind, 0) + 1
                continue
            events.append((_utc_day(ev.get("time"), where), ev))
    notes = [f"{n} event(s) of unknown type {k!r} ignored" for k, n in unknown.items()]
    return events, notes


def daily_stats(events) -> list[DayStats]:
    days: dict[date, DayStats] = {}
    studies: dict[date, set] = {}
    latencies: dict[date, list] = {}
    for day, ev in events:
        d = days.setdefault(day, DayStats(date=day.isoformat()))
        kind = ev["event"]
        if kind in ("received", "predicted") and ev.get("study_uid"):
            studies.setdefault(day, set()).add(ev["study_uid"])
        if kind == "predicted":
            d.images += 1
            ind = ev.get("in_distribution")
            if ind is not None:
                d.guarded += 1
                d.flagged += int(ind is False)
            if isinstance(ev.get("positives"), list):
                d.scored += 1
                for label in ev["positives"]:
                    d.positives[label] = d.positives.get(label, 0) + 1
                for label in ev.get("probabilities") or {}:
                    d.positives.setdefault(label, 0)
        elif kind == "sent":
            d.sent += 1
            if isinstance(ev.get("latency_s"), (int, float)):
                latencies.setdefault(day, []).append(float(ev["latency_s"]))
        elif kind == "send_failed":
            d.send_failures += 1
        elif kind == "skipped":
            d.skipped += 1
    for day, d in days.items():
        d.studies = len(studies.get(day, ()))
        if latencies.get(day):
            d.latency_p50, d.latency_p95 = (float(v) for v in np.percentile(latencies[day], [50, 95]))
    return [days[k] for k in sorted(days)]


# ---------------------------------------------------------------------------- expected rates


@dataclass
class Expected:
    rate: float
    source: str
    x0: int | None = None  # a count x0 of n0 (tested with the conditional test) ...
    n0: int | None = None  # ... or None: a rate known by construction (binomial test)


def expected_from_artifact(guard, decision) -> tuple[Expected | None, dict, list[str]]:
    """The guard's expected flag rate and each finding's expected positive rate, as the
    artifact records them (``guard``: its GuardRecord or None; ``decision``: its DecisionRule)."""
    notes, findings, flag = [], {}, None
    if guard is None:
        notes.append("the artifact has no input guard: no expected flag rate")
    elif guard.percentile is None:
        notes.append("the artifact's guard records no threshold percentile: no expected flag rate")
    else:
        held = guard.held_out
        seen = f"; held-out at export: {held.flag_rate_new:.1%} of {held.n_images}" if held else ""
        flag = Expected(
            rate=1.0 - guard.percentile / 100.0,
            source=f"guard threshold = {guard.percentile:g}th percentile of {guard.n_threshold} tuning images{seen}",
        )
    missing = []
    for label in decision.thresholds:
        rec = (decision.tuning or {}).get(label) or {}
        sens, spec, n_pos, n_neg = (rec.get(k) for k in ("sensitivity", "specificity", "n_pos", "n_neg"))
        if None in (sens, spec, n_pos, n_neg) or n_pos + n_neg == 0:
            missing.append(label)
            continue
        x0 = round(sens * n_pos) + round((1.0 - spec) * n_neg)
        n0 = int(n_pos + n_neg)
        findings[label] = Expected(x0 / n0, f"tuning split at threshold ({x0} of {n0} labelled images)", x0, n0)
    if missing:
        notes.append(
            "the decision rule records no tuning sensitivity/specificity for "
            + ", ".join(missing)
            + ": their expected positive rates come from the baseline days"
        )
    return flag, findings, notes


def expected_from_baseline(days: list[DayStats]) -> tuple[Expected | None, dict]:
    if not days:
        return None, {}
    span = f"baseline {days[0].date}..{days[-1].date}"
    x0, n0 = sum(d.flagged for d in days), sum(d.guarded for d in days)
    flag = Expected(x0 / n0, f"{span} ({x0} of {n0} images)", x0, n0) if n0 else None
    n_scored = sum(d.scored for d in days)
    findings = {}
    for label in sorted({lab for d in days for lab in d.positives}):
        x = sum(d.positives.get(label, 0) for d in days)
        if n_scored:
            findings[label] = Expected(x / n_scored, f"{span} ({x} of {n_scored} images)", x, n_scored)
    return flag, findings


# ---------------------------------------------------------------------------- tests


def _tails(x: int, n: int, exp: Expected) -> tuple[float, float]:
    if exp.n0 is None:
        return binom_cdf(x, n, exp.rate), binom_sf(x, n, exp.rate)
    return fisher_tails(x, n, exp.x0, exp.n0)


def p_above(x: int, n: int, exp: Expected) -> float:
    return _tails(x, n, exp)[1]


def p_two_sided(x: int, n: int, exp: Expected) -> float:
    lo, hi = _tails(x, n, exp)
    return min(1.0, 2.0 * min(lo, hi))


def cusum_k(p0: float, p1: float) -> float:
    """The Bernoulli CUSUM's reference value: flagged images per image between p0 and p1."""
    return math.log((1 - p0) / (1 - p1)) / math.log(p1 * (1 - p0) / (p0 * (1 - p1)))


def cusum_h(p0: float, n: int, rate: float, *, n0: int | None = None, chains: int = 400, seed: int = CUSUM_SEED):
    """Smallest h (0.25 grid) whose in-control alarm rate per day is <= ``rate``, by simulating
    ``chains`` CUSUMs of Binomial(n, p0) days (restart after each alarm) with a seeded generator.

    ``n0``: p0 was estimated from n0 images (baseline days). Each chain then redraws that
    estimate, Binomial(n0, p0) / n0, and runs with the k it gives, so h covers the estimate's
    own error: the rate is averaged over baselines, not conditional on a lucky one."""
    rng = np.random.default_rng(seed)
    horizon = int(min(20000, max(2000, math.ceil(2000.0 / (rate * chains)))))  # ~2000 alarms at the target
    grid = np.arange(0.25, 60.0, 0.25)
    p_hat = np.full(chains, p0) if n0 is None else np.maximum(rng.binomial(n0, p0, size=chains), 0.5) / n0
    p_hat = np.minimum(p_hat, 0.999 / CUSUM_SHIFT)
    k = np.array([cusum_k(p, CUSUM_SHIFT * p) for p in p_hat])[:, None]
    s = np.zeros((chains, grid.size))
    alarms = np.zeros(grid.size)
    for _ in range(horizon):
        x = rng.binomial(n, p0, size=(chains, 1))
        s = np.maximum(0.0, s + x - k * n)
        hit = s > grid
        alarms += hit.sum(axis=0)
        s[hit] = 0.0
    ok = np.nonzero(alarms / (chains * horizon) <= rate)[0]
    return float(grid[ok[0]] if ok.size else grid[-1])


@dataclass
class Alarm:
    date: str
    day: int  # 1 = the log's first day
    metric: str
    observed: str
    expected: str
    p_value: float | None
    level: float
    test: str

    def line(self) -> str:
        p = f"p = {self.p_value:.2e} < {self.level:.2e}" if self.p_value is not None else self.test
        head = f"ALARM {self.date} (day {self.day}) {self.metric}"
        return f"{head}: observed {self.observed} vs expected {self.expected}, {p}"


@dataclass
class MonitorReport:
    days: list[DayStats]
    tested_from: str | None
    expected_flag: Expected | None
    expected_findings: dict
    alpha: float
    alarms: list[Alarm]
    cusum: dict | None
    notes: list[str]
    tests_per_day: dict  # date -> m

    @property
    def alarmed(self) -> bool:
        return bool(self.alarms)

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "tested_from": self.tested_from,
            "expected": {
                "flag_rate": asdict(self.expected_flag) if self.expected_flag else None,
                "positive_rate": {k: asdict(v) for k, v in self.expected_findings.items()},
            },
            "cusum": self.cusum,
            "tests_per_day": self.tests_per_day,
            "days": [d.to_dict() for d in self.days],
            "alarms": [{**asdict(a), "line": a.line()} for a in self.alarms],
            "notes": self.notes,
        }


def monitor(
    paths, *, guard=None, decision=None, baseline_days: int | None = None, alpha: float = 0.01
) -> MonitorReport:
    """Daily statistics of the audit logs ``paths`` and the alarms of the tests in this module's
    docstring. ``guard`` / ``decision``: the artifact's GuardRecord and DecisionRule (``--model``)."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    if baseline_days is not None and baseline_days < 1:
        raise ConfigError(f"--baseline-days must be at least 1, got {baseline_days}")
    if decision is None and baseline_days is None:
        raise ConfigError("nothing to compare against: pass --model ARTIFACT or --baseline-days N")
    events, notes = read_events(paths)
    days = daily_stats(events)
    if not days:
        raise DatasetError("the audit log holds no events")
    first = date.fromisoformat(days[0].date)

    flag, findings = None, {}
    if decision is not None:
        flag, findings, art_notes = expected_from_artifact(guard, decision)
        notes += art_notes
    tested = days
    if baseline_days is not None:
        end = first + timedelta(days=baseline_days)
        base = [d for d in days if date.fromisoformat(d.date) < end]
        tested = [d for d in days if date.fromisoformat(d.date) >= end]
        b_flag, b_findings = expected_from_baseline(base)
        flag = flag or b_flag
        findings = {**b_findings, **findings}
        if not tested:
            notes.append(f"every day of the log is in the {baseline_days}-day baseline: nothing tested")
    elif decision is not None and len(findings) < len(decision.thresholds):
        notes.append("pass --baseline-days N to test the findings the artifact records no rate for")
    if flag is None:
        notes.append("no expected flag rate (no guard in the artifact or the log): flag rate not tested")

    with_cusum = flag is not None and 0.0 < flag.rate < 1.0 / CUSUM_SHIFT

    def m_of(d: DayStats) -> int:
        m = ((2 if with_cusum else 1) if flag is not None and d.guarded else 0) + (
            sum(1 for lab in findings if lab in d.positives) if d.scored else 0
        )
        return max(m, 1)

    alarms, per_day = [], {}
    cusum = None
    if with_cusum and tested:
        p1 = CUSUM_SHIFT * flag.rate
        k = cusum_k(flag.rate, p1)
        n_med = int(np.median([d.guarded for d in tested if d.guarded] or [0]))
        m_med = int(np.median([m_of(d) for d in tested]))
        h = cusum_h(flag.rate, max(n_med, 1), alpha / m_med, n0=flag.n0)
        cusum = {"p0": flag.rate, "p1": p1, "k": k, "h": h, "median_images": n_med, "per_day_rate": alpha / m_med}
    s = 0.0
    for d in tested:
        m = m_of(d)
        per_day[d.date] = m
        level = alpha / m
        index = (date.fromisoformat(d.date) - first).days + 1
        if flag is not None and d.guarded:
            p = p_above(d.flagged, d.guarded, flag)
            if p < level:
                alarms.append(
                    Alarm(
                        d.date,
                        index,
                        FLAG,
                        f"{d.flagged}/{d.guarded} = {d.flagged / d.guarded:.1%}",
                        f"{flag.rate:.1%}",
                        p,
                        level,
                        "one-sided exact",
                    )
                )
        if cusum is not None and d.guarded:
            s = max(0.0, s + d.flagged - cusum["k"] * d.guarded)
            if s > cusum["h"]:
                alarms.append(
                    Alarm(
                        d.date,
                        index,
                        f"{FLAG} CUSUM",
                        f"S = {s:.2f} > h = {cusum['h']:.2f} flagged images",
                        f"{flag.rate:.1%} (k = {cusum['k']:.2%} per image, tuned to detect {cusum['p1']:.1%})",
                        None,
                        level,
                        f"in-control false-alarm rate <= {cusum['per_day_rate']:.1e} per day",
                    )
                )
                s = 0.0
        if d.scored:
            for label, exp in findings.items():
                if label not in d.positives:
                    continue
                x = d.positives[label]
                p = p_two_sided(x, d.scored, exp)
                if p < level:
                    alarms.append(
                        Alarm(
                            d.date,
                            index,
                            f"{label} positive rate",
                            f"{x}/{d.scored} = {x / d.scored:.1%}",
                            f"{exp.rate:.1%}",
                            p,
                            level,
                            "two-sided exact",
                        )
                    )
    return MonitorReport(
        days=days,
        tested_from=tested[0].date if tested else None,
        expected_flag=flag,
        expected_findings=findings,
        alpha=alpha,
        alarms=alarms,
        cusum=cusum,
        notes=notes,
        tests_per_day=per_day,
    )


# ---------------------------------------------------------------------------- plot


def plot(report: MonitorReport, out, *, software: str | None = None) -> None:
    """Daily flag rate and per-finding positive rates, each with its expected band (the
    two-sided 1 - alpha/m binomial range at that day's image count). ``software``: the PNG's
    Software text chunk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(FLAG, report.expected_flag, lambda d: (d.flagged, d.guarded))]
    for label, exp in report.expected_findings.items():
        series.append((label, exp, lambda d, lab=label: (d.positives.get(lab, 0), d.scored)))
    cols = 3 if len(series) > 1 else 1
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.6 * rows), squeeze=False, sharex=True)
    dates = [datetime.fromisoformat(d.date) for d in report.days]
    m_untested = max(report.tests_per_day.values(), default=1)  # baseline days: the tested days' m
    for ax, (name, exp, count) in zip(axes.flat, series):
        xs, ns = zip(*(count(d) for d in report.days))
        rate = [x / n if n else np.nan for x, n in zip(xs, ns)]
        ax.plot(dates, rate, marker=".", lw=1, label="observed")
        if exp is not None:
            lo, hi = [], []
            for d, n in zip(report.days, ns):
                q = report.alpha / (2 * report.tests_per_day.get(d.date, m_untested))
                lo.append(binom_quantile(q, n, exp.rate) / n if n else np.nan)
                hi.append(binom_quantile(1 - q, n, exp.rate) / n if n else np.nan)
            ax.fill_between(dates, lo, hi, color="tab:green", alpha=0.2, label="expected band")
            ax.axhline(exp.rate, color="tab:green", lw=1)
        for a in report.alarms:
            if a.metric.startswith(name):
                ax.axvline(datetime.fromisoformat(a.date), color="tab:red", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": software} if software else None)
    plt.close(fig)
