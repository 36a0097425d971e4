"""Request latencies: recorded in an HdrHistogram, merged across processes, read as percentiles.

A sorted list of every latency grows with the run and a mean hides the tail; what a Kafka
engineer reads is p50, p99, p99.9 and the maximum (kafka-producer-perf-test, the OpenMessaging
Benchmark). An HdrHistogram records each value in about a microsecond into fixed memory (some
170 KiB here, whatever the run's length) with three significant digits at every magnitude, and
its standard encoding (compressed, base64) travels from a member process and into a JSON
report; histograms of several consumers add up exactly, where percentiles never do.

Coordinated omission: a load generator that waits for a slow answer before sending the next
request sends fewer requests exactly while the system is slow, and the stall hides in one
sample. A *paced* workload (``Pacer``) therefore measures each request from the moment it was
meant to be sent, as HdrHistogram's author advises; an unpaced one (send as fast as possible)
has no intended times, and measures from the send.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from hdrh.histogram import HdrHistogram

# Microseconds, from 1 us to 10 minutes, three significant digits: below 2,048 us every value
# is exact, above it within 0.1 %.
LOWEST_US = 1
HIGHEST_US = 600_000_000
DIGITS = 3
PERCENTILES = {"latency_p50": 50.0, "latency_p99": 99.0, "latency_p999": 99.9}


class LatencySummary(NamedTuple):
    """Percentiles and maximum of one histogram, in milliseconds; ``count`` requests."""

    p50: float
    p99: float
    p999: float
    max: float
    count: int

    def metric(self, name: str) -> float:
        """The figure of a latency metric (``latency_p99`` ...) of ``results.METRICS``."""
        return self.max if name == "latency_max" else getattr(self, name.removeprefix("latency_"))


class Latency:
    """An HdrHistogram of request latencies in microseconds.

    It pickles as its encoding (a member process returns it inside a ``Transfer``), and
    ``Latency.merge`` adds histograms recorded by several processes or rounds.
    """

    def __init__(self, histogram: HdrHistogram | None = None) -> None:
        self.histogram = histogram or HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)

    def record_us(self, microseconds: float) -> None:
        """Record one latency; values past the range are recorded as its end (10 minutes)."""
        self.histogram.record_value(min(HIGHEST_US, max(0, round(microseconds))))

    def record_since(self, start_ns: int, now_ns: int | None = None) -> int:
        """Record the time from ``start_ns`` to now; returns now. Times are
        ``time.monotonic_ns()``: CLOCK_MONOTONIC, one clock for every process of the machine,
        so a time stamped by a producer process can be read by a consumer process."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        self.record_us((now - start_ns) / 1000)
        return now

    @property
    def count(self) -> int:
        return self.histogram.get_total_count()

    def add(self, other: Latency) -> None:
        self.histogram.add(other.histogram)

    def encode(self) -> str:
        """HdrHistogram's V2 compressed encoding (base64 text; other HdrHistogram
        implementations decode it too)."""
        return self.histogram.encode().decode("ascii")

    @classmethod
    def decode(cls, encoded: str) -> Latency:
        return cls(HdrHistogram.decode(encoded.encode("ascii")))

    @classmethod
    def merge(cls, parts: Iterable[Latency | None]) -> Latency | None:
        """The sum of the histograms in ``parts`` (None entries skipped); None if none."""
        merged = None
        for part in parts:
            if part is None:
                continue
            if merged is None:
                merged = cls()
            merged.add(part)
        return merged

    def summary(self) -> LatencySummary:
        """p50, p99, p99.9 and max in milliseconds (one pass over the buckets)."""
        if self.count == 0:
            raise ValueError("no latency recorded")
        at = self.histogram.get_percentile_to_value_dict(list(PERCENTILES.values()))
        return LatencySummary(
            *(at[p] / 1000 for p in PERCENTILES.values()),
            self.histogram.get_max_value() / 1000,
            self.count,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Latency.decode, (self.encode(),))


@functools.lru_cache(maxsize=1024)
def summarize_encoded(encoded: str) -> LatencySummary:
    """The summary of an encoded histogram (a ``Round`` keeps its latencies encoded); cached,
    since reports, the gate and assertions read the same rounds again and again."""
    return Latency.decode(encoded).summary()


class Pacer:
    """Intended send times at ``rate`` per second, for measuring without coordinated omission.

    ``next()`` sleeps until the next intended time and returns it (``monotonic_ns``); a
    sender that fell behind gets the times it missed at once, so the backlog it could not
    send shows as latency instead of disappearing.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 per second, got {rate}")
        self.interval_ns = round(1e9 / rate)
        self.sent = 0
        self.start_ns = time.monotonic_ns()

    def next(self) -> int:
        intended = self.start_ns + self.sent * self.interval_ns
        self.sent += 1
        wait = intended - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        return intended
