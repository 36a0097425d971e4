"""Statistics that hold up on noisy shared machines, and the units figures are written in.

A single timing says as much about the neighbours as about the code. Decisions here therefore
use distribution-free confidence bounds: the sign test for one sample or for paired rounds,
Mann-Whitney for two independent samples (a run against a saved baseline). They need no
assumption about the shape of the noise, which on a shared VM is anything but normal.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

DEFAULT_CONFIDENCE = 0.95

# --- units -----------------------------------------------------------------------------------

_BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_COUNT_PREFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_NUMBER = r"(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_SIZE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[a-zA-Z]*)\s*$")
_BYTE_RATE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[a-z]+)\s*/\s*s\s*$", re.I)
_RECORD_RATE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<prefix>[kmg]?)\s*records?\s*/\s*s\s*$", re.I)


def parse_size(value: int | str) -> int:
    """Bytes from ``"64 MiB"``, ``"1.5GB"`` or an int. Decimal (kB, MB, GB) and binary (KiB,
    MiB, GiB) units are both accepted because people write both; case does not matter."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    match = _SIZE_RE.match(value)
    unit = match["unit"].lower() if match else ""
    if match is None or (unit and unit not in _BYTE_UNITS):
        raise ValueError(f"cannot parse size {value!r}: expected e.g. '64 MiB', '1.5 GB', '4096'")
    return int(float(match["number"]) * _BYTE_UNITS.get(unit, 1))


class Rate(NamedTuple):
    """A parsed rate: ``per_second`` in bytes/s (``kind="bytes"``) or records/s."""

    per_second: float
    kind: Literal["bytes", "records"]

    def __str__(self) -> str:
        if self.kind == "records":
            return f"{format_number(self.per_second)} records/s"
        return f"{format_number(self.per_second / 1e6)} MB/s"


def parse_rate(text: str) -> Rate:
    """``"200 MB/s"``, ``"1.5 GiB/s"`` (bytes) or ``"50k records/s"`` (records)."""
    if (match := _RECORD_RATE_RE.match(text)) is not None:
        return Rate(float(match["number"]) * _COUNT_PREFIXES[match["prefix"].lower()], "records")
    match = _BYTE_RATE_RE.match(text)
    if match is not None and match["unit"].lower() in _BYTE_UNITS:
        return Rate(float(match["number"]) * _BYTE_UNITS[match["unit"].lower()], "bytes")
    raise ValueError(
        f"cannot parse rate {text!r}: expected e.g. '200 MB/s', '1.5 GiB/s' or '50k records/s'"
    )


def format_number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, without exponent for everyday sizes."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Median, extremes and spread of one metric over the rounds."""

    n: int
    median: float
    min: float
    max: float
    mean: float
    stdev: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        """Interquartile range: the spread of the middle half, blind to a single outlier."""
        return self.q3 - self.q1


def summarize(values: Sequence[float]) -> Stats:
    """Stats of ``values`` (quartiles by the inclusive method, as spreadsheets compute them)."""
    if not values:
        raise ValueError("no values to summarize")
    if len(values) == 1:
        v = values[0]
        return Stats(1, v, v, v, v, 0.0, v, v)
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Stats(
        len(values),
        median,
        min(values),
        max(values),
        statistics.fmean(values),
        statistics.stdev(values),
        q1,
        q3,
    )


class InsufficientRounds(ValueError):
    """Too few rounds to state anything at the requested confidence."""


def sign_test_rank(n: int, confidence: float) -> int | None:
    """The largest k such that the k-th smallest of ``n`` observations lies below their
    population median with probability >= ``confidence`` (sign test); None if even the
    smallest does not (too few observations). Needs no assumption about the distribution."""
    _check_confidence(confidence)
    best, at_least_k = None, 2**n  # 2^n * P(Binomial(n, 1/2) >= k), for k = 0
    for k in range(1, n + 1):
        at_least_k -= math.comb(n, k - 1)
        if at_least_k / 2**n < confidence:
            break
        best = k
    return best


def median_lower_bound(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> float:
    """A lower confidence bound of the median of the distribution ``values`` come from."""
    k = sign_test_rank(len(values), confidence)
    if k is None:
        raise InsufficientRounds(
            f"{len(values)} rounds cannot bound a median at {confidence:.0%} confidence; "
            f"use at least {_min_rounds(confidence)} rounds (or a lower confidence)"
        )
    return sorted(values)[k - 1]


def per_look(confidence: float, looks: int) -> float:
    """The confidence each of ``looks`` looks at growing data must have so that the chance of
    any wrong verdict stays within ``1 - confidence`` (Bonferroni: simple and conservative)."""
    return 1 - (1 - confidence) / max(1, looks)


def _min_rounds(confidence: float) -> int:
    return math.ceil(math.log2(1 / (1 - confidence)))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _mann_whitney_counts(n: int, m: int) -> list[int]:
    """How many orderings of n + m values give each Mann-Whitney U = 0 .. n*m (no ties):
    the coefficients of the Gaussian binomial [n+m choose n]_q = prod (1-q^(m+i)) / (1-q^i)."""
    poly = [1]
    for i in range(1, n + 1):
        times = poly + [0] * (m + i)
        for j, coefficient in enumerate(poly):
            times[j + m + i] -= coefficient
        for j in range(i, len(times)):  # exact division by (1 - q^i)
            times[j] += times[j - i]
        poly = times[: i * m + 1]
    return poly


class RatioBounds(NamedTuple):
    """A ratio's estimate and its one-sided ``confidence`` bounds: current/baseline of two
    independent samples (Hodges-Lehmann estimate, Mann-Whitney bounds), or the median of
    paired per-round ratios (sign test)."""

    estimate: float
    lower: float
    upper: float
    confidence: float


def ratio_bounds(
    current: Sequence[float], baseline: Sequence[float], confidence: float = DEFAULT_CONFIDENCE
) -> RatioBounds:
    """How ``current`` compares with ``baseline`` when their rounds were not paired (two runs,
    e.g. a saved CI baseline). The estimate is the median of all pairwise ratios; each bound
    holds on its own side with ``confidence``. Raises InsufficientRounds when the samples are
    too small for that confidence (3 + 3 rounds suffice for 95 %, 5 + 5 for 99 %)."""
    _check_confidence(confidence)
    n, m = len(current), len(baseline)
    if n == 0 or m == 0:
        raise InsufficientRounds("both samples need at least one round")
    counts, total = _mann_whitney_counts(n, m), math.comb(n + m, n)
    k, below = 0, 0
    while k < n * m and (below + counts[k]) / total <= 1 - confidence:
        below += counts[k]
        k += 1
    if k == 0:
        each = next(r for r in range(1, 64) if 1 / math.comb(2 * r, r) <= 1 - confidence)
        raise InsufficientRounds(
            f"{n} and {m} rounds cannot bound a ratio at {confidence:.0%} confidence; "
            f"use at least {each} rounds on each side"
        )
    ratios = sorted(ratio(c, b) for c in current for b in baseline)
    return RatioBounds(statistics.median(ratios), ratios[k - 1], ratios[n * m - k], confidence)


def paired_ratio_bounds(
    ratios: Sequence[float], confidence: float = DEFAULT_CONFIDENCE
) -> RatioBounds:
    """The typical ratio of paired rounds (each a ratio of two set-ups measured back to back,
    in alternating order): the Hodges-Lehmann estimate of the log ratios, with one-sided
    bounds from the Wilcoxon signed-rank test. Its one assumption, a distribution symmetric
    about the typical ratio, holds by design: with the order of the pair alternating and
    load landing on either side alike, a round is as likely to err up as down. Much
    tighter than the sign test's bounds for the same rounds. Raises InsufficientRounds when
    there are too few rounds for the confidence (7 for 99 %), or a ratio is not positive."""
    _check_confidence(confidence)
    if any(not 0 < r < math.inf for r in ratios):
        raise InsufficientRounds("a round moved nothing on one side: its ratio has no logarithm")
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    walsh = sorted((logs[i] + logs[j]) / 2 for i in range(n) for j in range(i, n))
    counts, total = _signed_rank_counts(n), 2**n
    k, below = 0, 0
    while k < len(walsh) and (below + counts[k]) / total <= 1 - confidence:
        below += counts[k]
        k += 1
    if k == 0:
        least = next(m for m in range(1, 64) if 1 / 2**m <= 1 - confidence)
        raise InsufficientRounds(
            f"{n} rounds cannot bound a ratio at {confidence:.0%} confidence; "
            f"use at least {least} rounds"
        )
    return RatioBounds(
        math.exp(statistics.median(walsh)),
        math.exp(walsh[k - 1]),
        math.exp(walsh[-k]),
        confidence,
    )


def _signed_rank_counts(n: int) -> list[int]:
    """How many of the 2^n sign patterns of ranks 1..n give each signed-rank sum 0 .. n(n+1)/2
    (the subsets of {1..n} by their sum)."""
    counts = [1]
    for rank in range(1, n + 1):
        grown = counts + [0] * rank
        for total, count in enumerate(counts):
            grown[total + rank] += count
        counts = grown
    return counts


def ratio(a: float, b: float) -> float:
    """a / b, with 0 / 0 = 1 and x / 0 = inf (a round that moved nothing)."""
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b
