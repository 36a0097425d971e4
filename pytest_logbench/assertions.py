"""Assertions for performance tests that fail when, and only when, the evidence says so.

Why not ``assert result.mb_per_s.median > 200``: on a shared machine one descheduled round
moves a median of three, and a comparison of two medians measured minutes apart compares the
neighbours as much as the code. These assertions decide on every round with a stated confidence
(sign test: distribution-free, so a few wild rounds neither pass nor fail a test), compare two
set-ups only on rounds measured interleaved, and say in their message which figures and which
evidence they used, so a red CI job can be read without rerunning it.

Examples (in a test using the ``broker_factory`` and ``measure`` fixtures)::

    zc, cp = measure.compare(FetchWorkload(broker_factory(), "64 MiB"),
                             FetchWorkload(broker_factory(copy=True), "64 MiB"), rounds=7)
    assert_throughput(zc, at_least="200 MB/s")
    assert_cheaper(zc, cp, cpu_per_gb_by=1.2)
    assert_zero_copy(broker, during=lambda: consumer.consume("t"))
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import psutil

from pytest_logbench import pagecache
from pytest_logbench.brokers import LocalOnly
from pytest_logbench.contract import Broker, CountingBroker
from pytest_logbench.counters import MetricsWindow
from pytest_logbench.results import METRICS, Result, paired_ratios
from pytest_logbench.stats import (
    DEFAULT_CONFIDENCE,
    Rate,
    format_number,
    median_lower_bound,
    parse_rate,
    per_look,
    sign_test_rank,
)
from pytest_logbench.zerocopy import Evidence, ZeroCopyReport, check_zero_copy

__all__ = [
    "CacheReport",
    "assert_cheaper",
    "assert_faster",
    "assert_fetch_reads",
    "assert_served_from_cache",
    "assert_throughput",
    "assert_zero_copy",
]


def _percent(confidence: float) -> str:
    """95 % as ``95%``, a per-look 98.33 % as ``98.3%``."""
    return f"{confidence:.1%}".replace(".0%", "%")


def _bound_note(n: int, confidence: float) -> str:
    k = sign_test_rank(n, confidence)
    if k is None:
        return f"{n} rounds are too few for {_percent(confidence)} confidence"
    return f"{confidence:.0%} lower bound = round {k} of {n} sorted (sign test on the median)"


def _rounds(values: list[float]) -> str:
    return " ".join(format_number(v) for v in values)


class _Undecided(Exception):
    """The rounds so far neither confirm nor refute the claim: more rounds may tell."""


def _decide(
    results: Sequence[Result], judge: Callable[[Sequence[Result], float], None], confidence: float
) -> None:
    """Judge ``results``; while the verdict is undecided and they can be extended (they came
    from the ``measure`` fixture, whose budget is not spent), record more rounds and judge
    again. Each look gets the confidence left for it (``per_look``), so adding rounds until
    the evidence speaks never raises the chance of a wrong verdict above ``1 - confidence``."""
    __tracebackhide__ = True
    more = results[0].more
    looks = results[0].looks if more is not None else 1
    while True:
        try:
            judge(results, per_look(confidence, looks))
            return
        except _Undecided as undecided:
            extended = more() if more is not None else None
            if extended is None:
                raise AssertionError(str(undecided)) from None
            by_uid = {r.uid: r for r in extended}
            results = [by_uid[r.uid] for r in results]


def assert_throughput(
    result: Result, at_least: str | Rate, *, confidence: float = DEFAULT_CONFIDENCE
) -> None:
    """Fail unless the median throughput of ``result`` is at least ``at_least`` with
    ``confidence``: ``"200 MB/s"`` and ``"1.5 GiB/s"`` check bytes, ``"50k records/s"``
    records. A result from the ``measure`` fixture gets more rounds while the rounds neither
    show nor refute it (within the budget); it fails at once when they refute it."""
    __tracebackhide__ = True
    rate = parse_rate(at_least) if isinstance(at_least, str) else at_least
    metric = METRICS["throughput" if rate.kind == "bytes" else "records"]
    required = rate.per_second / 1e6 if rate.kind == "bytes" else rate.per_second
    if not result.values(metric.name):
        raise ValueError(f"{result.key}: no rounds")

    def judge(results: Sequence[Result], level: float) -> None:
        __tracebackhide__ = True
        values = results[0].values(metric.name)
        bound = _lower_or_none(values, level, results[0].more is not None)
        if bound is not None and bound >= required:
            return
        stats = results[0].stats(metric.name)
        refuted = _upper_or_none(values, level)
        why = (
            "the median itself is below it"
            if stats.median < required
            else f"the median is above it, but the rounds spread too far to say so at "
            f"{_percent(level)} confidence"
        )
        message = (
            f"{results[0].key}: {metric.name} not shown to be at least "
            f"{metric.format(required)}: {why}\n"
            f"  lower bound {'-' if bound is None else metric.format(bound)} "
            f"({_bound_note(len(values), level)})\n"
            f"  median {metric.format(stats.median)}, min {format_number(stats.min)}, max "
            f"{format_number(stats.max)}, IQR {format_number(stats.iqr)}\n"
            f"  rounds ({metric.unit}): {_rounds(values)}"
        )
        if refuted is not None and refuted < required:
            raise AssertionError(message)
        raise _Undecided(message)

    _decide([result], judge, confidence)


def _lower_or_none(
    values: Sequence[float], confidence: float, extendable: bool = True
) -> float | None:
    """The sign-test lower bound of the median; None when too few rounds to bound it yet
    (rounds that cannot be extended raise ``InsufficientRounds``, a usage error)."""
    __tracebackhide__ = True
    if not extendable:
        return median_lower_bound(values, confidence)
    k = sign_test_rank(len(values), confidence)
    return None if k is None else sorted(values)[k - 1]


def _upper_or_none(values: Sequence[float], confidence: float) -> float | None:
    """An upper confidence bound of the median (the mirror of the sign-test lower bound)."""
    k = sign_test_rank(len(values), confidence)
    return None if k is None else sorted(values)[len(values) - k]


def _assert_paired(
    better: Result, worse: Result, metric: str, by: float, confidence: float, claim: str
) -> None:
    """Fail unless the per-round ratios ``better/worse`` of ``metric`` (oriented so that
    bigger means ``better`` wins) have a lower confidence bound of at least ``by``; add
    rounds while the ratios neither show nor refute it."""
    __tracebackhide__ = True

    def judge(results: Sequence[Result], level: float) -> None:
        __tracebackhide__ = True
        good, bad = results
        if METRICS[metric].higher_is_better:
            ratios = paired_ratios(good, bad, metric)
        else:
            ratios = paired_ratios(bad, good, metric)
        bound = _lower_or_none(ratios, level, good.more is not None)
        if bound is not None and bound >= by:
            return
        unit = METRICS[metric]
        shown = "too few rounds" if bound is None else f"x{bound:.3g}"
        message = (
            f"{good.name} not shown to be {claim} than {bad.name} by x{by:g} ({metric}): "
            f"{shown} at {_percent(level)} confidence\n"
            f"  per-round ratios (interleaved rounds): {' '.join(f'{r:.3g}' for r in ratios)}\n"
            f"  lower bound {shown} ({_bound_note(len(ratios), level)}), median ratio "
            f"x{statistics.median(ratios):.3g}\n"
            f"  {good.name}: median {unit.format(good.stats(metric).median)}; "
            f"{bad.name}: median {unit.format(bad.stats(metric).median)}"
        )
        upper = _upper_or_none(ratios, level)
        if upper is not None and upper < by:
            raise AssertionError(message)
        raise _Undecided(message)

    _decide([better, worse], judge, confidence)


def assert_faster(
    a: Result,
    b: Result,
    by: float = 1.0,
    *,
    metric: str = "throughput",
    confidence: float = DEFAULT_CONFIDENCE,
) -> None:
    """Fail unless ``a`` beats ``b`` by the factor ``by`` (``a/b >= by`` per round, median
    bounded with ``confidence``). ``a`` and ``b`` must come from one ``measure.compare``."""
    __tracebackhide__ = True
    if not METRICS[metric].higher_is_better:
        raise ValueError(f"{metric} is a cost, not a speed: use assert_cheaper")
    _assert_paired(a, b, metric, by, confidence, "faster")


def assert_cheaper(
    a: Result,
    b: Result,
    *,
    cpu_per_gb_by: float | None = None,
    syscalls_per_gb_by: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> None:
    """Fail unless ``b`` costs at least ``cpu_per_gb_by`` times the broker CPU per GB of ``a``
    (and/or ``syscalls_per_gb_by`` times its syscalls per GB, a count that machine noise does
    not move), per interleaved round with ``confidence``."""
    __tracebackhide__ = True
    if cpu_per_gb_by is None and syscalls_per_gb_by is None:
        raise ValueError("give cpu_per_gb_by, syscalls_per_gb_by or both")
    for metric, by in (("cpu", cpu_per_gb_by), ("syscalls", syscalls_per_gb_by)):
        if by is not None:
            _assert_paired(a, b, metric, by, confidence, "cheaper")


def assert_zero_copy(
    broker: Broker, during: Callable[[], object], *, evidence: Evidence = "auto"
) -> ZeroCopyReport:
    """Run ``during`` and fail unless every payload byte fetched meanwhile left the broker by
    sendfile and none by a copy, per the broker's counters and, where the kernel lets us, a
    trace of the broker process (``evidence``: ``auto`` = perf, else strace, else counters
    only; ``perf``/``strace`` insist; ``counters`` skips the trace). Returns the report; its
    message names the evidence used."""
    __tracebackhide__ = True
    report = check_zero_copy(broker, during, evidence=evidence)
    if not report.ok:
        raise AssertionError(report.message())
    return report


@dataclass(frozen=True)
class CacheReport:
    """Whether a fetch window was served from the page cache, and the evidence."""

    payload_bytes: int
    storage_read_bytes: int | None  # bytes the broker made the kernel read from storage
    before: pagecache.Residency
    after: pagecache.Residency

    @property
    def gained_pages(self) -> int:
        """Segment pages that entered the cache during the window: read from disk."""
        return self.before.delta(self.after).gained_pages

    @property
    def ok(self) -> bool:
        return self.payload_bytes > 0 and self.gained_pages == 0 and not self.storage_read_bytes

    def message(self) -> str:
        served = "served from the page cache" if self.ok else "NOT served from the page cache"
        io = "unavailable" if self.storage_read_bytes is None else f"{self.storage_read_bytes:,} B"
        lines = [
            f"fetch window {served}: {self.payload_bytes:,} payload bytes fetched",
            f"  segment pages brought into the cache: {self.gained_pages} (residency before and "
            f"after, via {self.after.method})",
            f"  broker storage reads (/proc/PID/io read_bytes): {io}",
        ]
        if self.payload_bytes == 0:
            lines.append("  - nothing was fetched in the window, so nothing shows a cache hit")
        changed = [f for f in self.before.delta(self.after).files if f.gained_pages]
        lines += [f"  - {f.report()}" for f in changed]
        return "\n".join(lines)


def assert_served_from_cache(
    broker: Broker,
    during: Callable[[], object],
    *,
    topic: str | Sequence[str] | None = None,
) -> CacheReport:
    """Run ``during`` (fetches only: appends add pages too) and fail unless it was served
    from the page cache: no page of the broker's segments (of ``topic``, a name or several,
    default all) entered the cache meanwhile, and the broker read nothing from storage (its
    ``read_bytes``, which counts real device reads, unlike ``rchar``; not known for an
    external broker, whose segments and counters still decide)."""
    __tracebackhide__ = True
    files = pagecache.files_of(broker, topic)
    process = _process_of(broker)
    before = pagecache.residency(files)
    io_before = _storage_reads(process)
    with MetricsWindow(broker) as counters:
        during()
    io_after = _storage_reads(process)
    after = pagecache.residency(files)
    reads = None if io_before is None or io_after is None else io_after - io_before
    report = CacheReport(int(counters.delta("logbench_fetch_bytes_total")), reads, before, after)
    if not report.ok:
        raise AssertionError(report.message())
    return report


def _process_of(broker: Broker) -> psutil.Process | None:
    try:
        return psutil.Process(broker.pid)  # type: ignore[attr-defined]
    except LocalOnly:  # an external broker: no process of ours to read
        return None


def _storage_reads(process: psutil.Process | None) -> int | None:
    if process is None:
        return None
    try:
        return process.io_counters().read_bytes
    except (psutil.AccessDenied, AttributeError):  # no task IO accounting here
        return None


def assert_fetch_reads(
    broker: CountingBroker,
    kind: Literal["tail", "history"],
    during: Callable[[], object],
    *,
    at_least: float = 1.0,
) -> dict[str, int]:
    """Run ``during`` and fail unless at least ``at_least`` (a fraction) of the payload bytes
    fetched meanwhile were ``kind`` reads by the broker's own classification: ``tail`` when
    a fetch starts within ``tail_window_bytes`` of the log end (just written, likely cached),
    ``history`` otherwise (a lagging consumer or a replay). Returns bytes by kind."""
    __tracebackhide__ = True
    if kind not in ("tail", "history"):
        raise ValueError(f"kind must be 'tail' or 'history', got {kind!r}")
    with MetricsWindow(broker) as counters:
        during()
    read = {
        k: int(counters.delta("logbench_fetch_bytes_total", read=k)) for k in ("tail", "history")
    }
    total = sum(read.values())
    share = read[kind] / total if total else 0.0
    if total == 0 or share < at_least:
        raise AssertionError(
            f"{share:.1%} of the fetched bytes were {kind} reads, wanted at least "
            f"{at_least:.1%}: tail {read['tail']:,} B, history {read['history']:,} B "
            "(broker counter logbench_fetch_bytes_total; tail = the fetch started within "
            "tail_window_bytes of the log end)"
        )
    return read
