"""Interleaved, fixed-duration latency measurement for a noisy shared machine.

Every subject (a zero-argument callable that runs one batch) is warmed up, then measured in
``rounds`` rounds; each round gives every subject the same slice of wall time in turn, so a
change in machine load during the run hits all subjects alike. Per round we keep the
p50/p90/p99 of the per-call latencies and the throughput; the reported figure is the median
over rounds. Ratios between two subjects are taken round by round (side by side), then the
median of those ratios is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class RoundStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    img_s: float
    calls: int


@dataclass
class Measurement:
    batch: int
    rounds: list[RoundStats] = field(default_factory=list)
    error: str | None = None

    def median(self, attr: str) -> float | None:
        if not self.rounds:
            return None
        return float(np.median([getattr(r, attr) for r in self.rounds]))

    def summary(self) -> dict:
        return {
            "batch": self.batch,
            "p50_ms": self.median("p50_ms"),
            "p90_ms": self.median("p90_ms"),
            "p99_ms": self.median("p99_ms"),
            "img_s": self.median("img_s"),
            "rounds": len(self.rounds),
            "calls": sum(r.calls for r in self.rounds),
        }


def run_for(fn: Callable[[], object], seconds: float, min_calls: int = 1) -> RoundStats:
    """Call ``fn`` back to back for ``seconds`` (at least ``min_calls`` times)."""
    lat = []
    start = time.perf_counter()
    end = start + seconds
    while True:
        t = time.perf_counter()
        fn()
        now = time.perf_counter()
        lat.append(now - t)
        if now >= end and len(lat) >= min_calls:
            break
    total = now - start
    ms = np.asarray(lat) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return RoundStats(float(p50), float(p90), float(p99), len(lat) / total, len(lat))


def measure_interleaved(
    subjects: dict[str, Callable[[], object]],
    batch: int,
    seconds: float,
    warmup: float,
    rounds: int = 5,
    on_round: Callable[[int, int], None] | None = None,
) -> dict[str, Measurement]:
    """{name: Measurement} for callables that each run one batch of ``batch`` images.

    ``seconds`` is each subject's total measured time, split evenly over ``rounds``. A
    subject that raises is dropped from later rounds and its error recorded.
    """
    out = {name: Measurement(batch) for name in subjects}
    live = dict(subjects)
    for name, fn in list(live.items()):
        try:
            run_for(fn, warmup)
        except Exception as exc:  # a backend failing at run time is a result, not a crash
            out[name].error = f"{type(exc).__name__}: {exc}"
            del live[name]
    per_round = seconds / max(rounds, 1)
    for r in range(rounds):
        for name, fn in list(live.items()):
            try:
                stats = run_for(fn, per_round)
            except Exception as exc:
                out[name].error = f"{type(exc).__name__}: {exc}"
                del live[name]
                continue
            stats.img_s *= batch
            out[name].rounds.append(stats)
        if on_round is not None:
            on_round(r + 1, rounds)
    return out


def paired_ratio(num: Measurement, den: Measurement, attr: str) -> float | None:
    """Median over rounds of num.attr / den.attr, pairing the same round of both."""
    pairs = [(getattr(a, attr), getattr(b, attr)) for a, b in zip(num.rounds, den.rounds)]
    ratios = [a / b for a, b in pairs if b > 0]
    return float(np.median(ratios)) if ratios else None
