"""Measurements of broker workloads that hold up on noisy shared machines.

Why this module exists: a single timing of "fetch 64 MiB" on a shared 2-core VM says as much
about the neighbours as about the broker. A measurement here therefore

* runs a workload (produce, fetch cold or warm, a consumer fleet) for several rounds after a
  warm-up, and keeps every round: bytes, records, wall time, the broker's CPU and, where perf
  may watch the broker, its syscall counts;
* reports medians with their spread, and decides with distribution-free confidence bounds
  (sign test for one sample or paired rounds, Mann-Whitney for two independent samples) rather
  than on one pair of numbers, so one descheduled round can neither pass nor fail a test;
* interleaves the rounds of two set-ups it compares (A B A B ...), so that drift of the
  machine during the measurement hits both sides alike and cancels in the per-round ratios.

CPU time comes from the broker process, not from the test: the seed's claim is that zero-copy
makes the *sender* cheaper. psutil gives the user/system split, but in 10 ms ticks; a 64 MiB
zero-copy fetch costs ~30 ms, so the total is read in nanoseconds from the threads' schedstat.
"""

from __future__ import annotations

import math
import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import pytest

from pytest_logbench.brokers import LocalOnly, metric_sum

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    from pytest_logbench.client import Consumer, Producer, Transfer

# The plugin imports this module at every pytest start: the client (and with it the broker's
# wire codec), ssl, psutil and the page-cache module are imported where first needed.

DEFAULT_CONFIDENCE = 0.95

# --- units -----------------------------------------------------------------------------------

_BYTE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
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


# --- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A figure derived from each round; ``higher_is_better`` orients comparisons."""

    name: str
    unit: str
    higher_is_better: bool
    description: str

    def format(self, value: float) -> str:
        return f"{format_number(value)} {self.unit}"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("throughput", "MB/s", True, "payload bytes (10^6) per wall-clock second"),
        Metric("records", "records/s", True, "records per wall-clock second"),
        Metric("cpu", "s/GB", False, "broker CPU seconds (user + system) per 10^9 payload bytes"),
        Metric("syscalls", "calls/GB", False,
               "broker syscalls counted by perf per 10^9 payload bytes: a count, not a time"),
    )
}


@dataclass(frozen=True)
class Round:
    """One timed run of a workload and what the broker spent on it.

    ``cpu_seconds`` is the precise total (schedstat, ns); ``cpu_user``/``cpu_system`` are
    psutil's split in clock ticks. All three are None when the broker is not a local process.
    ``syscalls`` maps syscall names to counts (perf tracepoints), None when not counted.
    """

    bytes: int
    records: int
    seconds: float
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_seconds: float | None = None
    syscalls: dict[str, int] | None = None

    def value(self, metric: str) -> float | None:
        """This round's figure for ``metric`` (see ``METRICS``), None when not measured."""
        if metric == "throughput":
            return self.bytes / self.seconds / 1e6
        if metric == "records":
            return self.records / self.seconds
        if metric == "cpu":
            return None if self.cpu_seconds is None else self.cpu_seconds / self.bytes * 1e9
        if metric == "syscalls":
            if self.syscalls is None:
                return None
            return sum(self.syscalls.values()) / self.bytes * 1e9
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")


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
    return Stats(len(values), median, min(values), max(values), statistics.fmean(values),
                 statistics.stdev(values), q1, q3)


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
    """Ratio current/baseline of two independent samples: Hodges-Lehmann estimate and the
    one-sided ``confidence`` bounds from the Mann-Whitney test."""

    estimate: float
    lower: float
    upper: float
    confidence: float


def ratio_bounds(current: Sequence[float], baseline: Sequence[float],
                 confidence: float = DEFAULT_CONFIDENCE) -> RatioBounds:
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
    ratios = sorted(_ratio(c, b) for c in current for b in baseline)
    return RatioBounds(statistics.median(ratios), ratios[k - 1], ratios[n * m - k], confidence)


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidencySample:
    """Page-cache residency of a broker's segments at one moment of a measurement:
    ``segments`` maps each segment (relative to the log dir) to its resident fraction."""

    seconds: float
    round: int
    phase: Literal["prepared", "ran"]
    segments: dict[str, float]


@dataclass(frozen=True)
class Result:
    """All rounds of one measured workload, with statistics per metric.

    ``group`` is shared by results measured interleaved by ``Meter.compare``: only those can
    be compared round by round (``paired_ratios``).
    """

    name: str
    rounds: tuple[Round, ...]
    workload: dict[str, Any] = field(default_factory=dict)
    warmup: int = 0
    nodeid: str = ""
    group: str | None = None
    syscall_source: str = "not counted"
    residency: tuple[ResidencySample, ...] = ()
    attempt: int = 1  # 2: looked regressed, measured again, rounds of both kept (``Meter``)

    @property
    def key(self) -> str:
        """What identifies this result across runs (baselines): test node id and name."""
        return f"{self.nodeid} ({self.name})" if self.nodeid else self.name

    def values(self, metric: str) -> list[float]:
        """The per-round figures of ``metric``; empty when it was not measured."""
        values = [r.value(metric) for r in self.rounds]
        return [] if None in values else values  # type: ignore[return-value]

    def stats(self, metric: str) -> Stats:
        values = self.values(metric)
        if not values:
            raise ValueError(f"{self.key}: {metric} was not measured ({self._why_missing(metric)})")
        return summarize(values)

    def _why_missing(self, metric: str) -> str:
        if metric == "cpu":
            return "the broker is not a local process"
        if metric == "syscalls":
            return f"syscalls {self.syscall_source}"
        return "no rounds"

    @property
    def mb_per_s(self) -> Stats:
        return self.stats("throughput")

    @property
    def records_per_s(self) -> Stats:
        return self.stats("records")

    @property
    def cpu_per_gb(self) -> Stats:
        return self.stats("cpu")

    def describe(self, metric: str = "throughput") -> str:
        """One line for messages: median, min-max, IQR and rounds of ``metric``."""
        s, unit = self.stats(metric), METRICS[metric]
        return (f"{self.key}: median {unit.format(s.median)} (min {format_number(s.min)}, "
                f"max {format_number(s.max)}, IQR {format_number(s.iqr)}, {s.n} rounds)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: raw rounds plus the statistics of every measured metric."""
        data = asdict(self)
        data["stats"] = {m: asdict(self.stats(m)) for m in METRICS if self.values(m)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Inverse of ``to_dict`` (statistics are recomputed from the rounds)."""
        return cls(
            name=data["name"],
            rounds=tuple(Round(**r) for r in data["rounds"]),
            workload=data.get("workload", {}),
            warmup=data.get("warmup", 0),
            nodeid=data.get("nodeid", ""),
            group=data.get("group"),
            syscall_source=data.get("syscall_source", "not counted"),
            residency=tuple(ResidencySample(**s) for s in data.get("residency", ())),
            attempt=data.get("attempt", 1),
        )


class NotInterleaved(ValueError):
    """Two results were not measured round by round together, so rounds cannot be paired."""


def paired_ratios(a: Result, b: Result, metric: str = "throughput") -> list[float]:
    """Per-round ratios a/b of ``metric`` for results of one ``Meter.compare`` call.

    Pairing is what makes a comparison robust on a drifting machine: round i of a and of b ran
    back to back, so a slow period slows both and their ratio stays put.
    """
    if a.group is None or a.group != b.group or len(a.rounds) != len(b.rounds):
        raise NotInterleaved(
            f"{a.key} and {b.key} were not measured interleaved; measure them together with "
            "measure.compare(workload_a, workload_b) to compare them round by round"
        )
    values_a, values_b = a.values(metric), b.values(metric)
    if not values_a or not values_b:
        missing = a if not values_a else b
        raise ValueError(f"{missing.key}: {metric} was not measured "
                         f"({missing._why_missing(metric)})")
    return [_ratio(x, y) for x, y in zip(values_a, values_b, strict=True)]


# --- broker counters over a window -----------------------------------------------------------


class MetricsWindow:
    """Deltas of a broker's counters over a ``with`` block (``broker.metrics()`` snapshots).

    On exit it waits briefly until every byte a fetch counted was also counted as sent: the
    broker counts a slice as sent after the send completes (and after an injected slowdown's
    sleep), which can be just after the client already has the bytes.
    """

    SETTLE_SECONDS = 2.0

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.before: dict[str, list[dict[str, Any]]] = {}
        self.after: dict[str, list[dict[str, Any]]] = {}

    def __enter__(self) -> MetricsWindow:
        self.before = self.broker.metrics()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # the window failed: its counters are not worth waiting for
            return
        deadline = time.monotonic() + self.SETTLE_SECONDS
        while True:
            self.after = self.broker.metrics()
            fetched = self.delta("logbench_fetch_bytes_total")
            if self.delta("logbench_bytes_sent_total") >= fetched or time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def delta(self, name: str, **labels: str) -> float:
        """Change of counter ``name`` summed over the samples whose labels include ``labels``."""
        return metric_sum(self.after, name, labels) - metric_sum(self.before, name, labels)


# --- workloads -------------------------------------------------------------------------------


class Workload(Protocol):
    """What ``Meter`` runs. ``setup`` once (untimed: seed data, connect), ``prepare`` before
    every round (untimed: put the page cache in a known state), ``run`` timed, ``close`` at
    the end, also after a failure."""

    broker: Any
    name: str

    def describe(self) -> dict[str, Any]: ...

    def setup(self) -> None: ...

    def prepare(self) -> None: ...

    def run(self) -> Transfer: ...

    def close(self) -> None: ...


def client_options(broker: Any) -> dict[str, Any]:
    """Connection arguments for the harness clients: a TLS broker needs its CA trusted."""
    options = getattr(broker, "options", None)
    if options is not None and options.tls:
        return {"cafile": str(broker.ca_path)}
    return {}


def _topic(prefix: str) -> str:
    # A fresh topic per workload: two workloads on one broker never read each other's data.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class ProduceWorkload:
    """Each round appends ``size`` bytes of records to one partition (one producer)."""

    name = "produce"

    def __init__(self, broker: Any, size: int | str = "64 MiB", *, topic: str | None = None,
                 record_bytes: int = 1024, batch_bytes: int = 256 << 10, acks: int = 1) -> None:
        self.broker = broker
        self.size = parse_size(size)
        self.topic = topic or _topic("logbench-produce")
        self.record_bytes, self.batch_bytes, self.acks = record_bytes, batch_bytes, acks
        self._producer: Producer | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "produce", "bytes": self.size, "record_bytes": self.record_bytes,
                "batch_bytes": self.batch_bytes, "acks": self.acks, **_broker_traits(self.broker)}

    def setup(self) -> None:
        from pytest_logbench.client import Producer

        self._producer = Producer(self.broker.bootstrap, **client_options(self.broker))

    def prepare(self) -> None:
        """Nothing: appends go to the page cache whatever its state."""

    def run(self) -> Transfer:
        assert self._producer is not None, "setup() not called"
        return self._producer.produce(self.topic, self.size, record_bytes=self.record_bytes,
                                      batch_bytes=self.batch_bytes, acks=self.acks)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


class FetchWorkload:
    """Each round ``consumers`` consumers read the same ``size`` bytes, seeded once by setup.

    ``cache="warm"`` reads the segments into the page cache before every round (what a
    consumer at the tail sees), ``"cold"`` evicts them (a lagging consumer replaying history:
    the broker must go to disk), ``"as-is"`` leaves the cache alone (e.g. an external cluster,
    whose files we cannot touch). More than one consumer makes a fleet reading concurrently.
    """

    def __init__(self, broker: Any, size: int | str = "64 MiB", *, topic: str | None = None,
                 cache: Literal["warm", "cold", "as-is"] = "warm", consumers: int = 1,
                 max_bytes: int = 8 << 20) -> None:
        if cache not in ("warm", "cold", "as-is"):
            raise ValueError(f"cache must be 'warm', 'cold' or 'as-is', got {cache!r}")
        if consumers < 1:
            raise ValueError(f"consumers must be >= 1, got {consumers}")
        self.broker = broker
        self.size = parse_size(size)
        self.topic = topic or _topic("logbench-fetch")
        self.cache, self.consumers, self.max_bytes = cache, consumers, max_bytes
        self.name = f"fetch-{cache}" if consumers == 1 else f"fleet{consumers}-{cache}"
        self._end = 0
        self._clients: list[Consumer] = []
        self._pool: ThreadPoolExecutor | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "fetch", "bytes": self.size, "cache": self.cache,
                "consumers": self.consumers, "max_bytes": self.max_bytes,
                **_broker_traits(self.broker)}

    def setup(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from pytest_logbench import pagecache
        from pytest_logbench.client import Consumer, Producer

        options = client_options(self.broker)
        producer = Producer(self.broker.bootstrap, **options)
        try:
            producer.produce(self.topic, self.size)
            self._end, _ = producer.client.list_offset(self.topic, 0, -1)
        finally:
            producer.close()
        if self.cache == "cold":
            supported, reason = pagecache.eviction_supported(self.broker.segment_files(
                self.topic)[0].parent)
            if not supported:
                pytest.skip(f"a cold fetch needs page-cache eviction: {reason}")
        self._clients = [Consumer(self.broker.bootstrap, **options)
                         for _ in range(self.consumers)]
        if self.consumers > 1:
            self._pool = ThreadPoolExecutor(self.consumers, thread_name_prefix="logbench-fleet")

    def prepare(self) -> None:
        from pytest_logbench import pagecache

        if self.cache == "as-is":
            return
        files = self.broker.segment_files(self.topic)
        if self.cache == "warm":
            pagecache.warm(files)
            return
        evicted = pagecache.evict(files)
        if not evicted.complete:
            raise RuntimeError(f"could not make {self.topic} cold:\n{evicted.report()}")

    def run(self) -> Transfer:
        from pytest_logbench.client import Transfer

        def one(client: Consumer) -> Transfer:
            return client.consume(self.topic, until_offset=self._end, max_bytes=self.max_bytes)

        started = time.perf_counter()
        if self._pool is None:
            transfers = [one(c) for c in self._clients]
        else:
            transfers = list(self._pool.map(one, self._clients))
        seconds = time.perf_counter() - started
        return Transfer(sum(t.bytes for t in transfers), sum(t.records for t in transfers),
                        sum(t.batches for t in transfers), sum(t.requests for t in transfers),
                        seconds)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for client in self._clients:
            client.close()


def _broker_traits(broker: Any) -> dict[str, Any]:
    """The broker options a reader of a report needs to interpret its figures."""
    options = getattr(broker, "options", None)
    if options is None:
        return {"broker": "external"}
    return {"broker": "tls" if options.tls else ("copy" if options.copy else "zerocopy"),
            "fetch_slowdown": options.fetch_slowdown}


# --- the meter -------------------------------------------------------------------------------


@dataclass
class _Reading:
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_seconds: float | None = None
    syscalls: dict[str, int] | None = None


class _BrokerProbe:
    """Reads a broker's CPU (and syscall counts with perf) around a timed section."""

    def __init__(self, broker: Any, syscalls: bool | None) -> None:
        import psutil

        try:
            pid = broker.pid
        except (LocalOnly, AttributeError):
            pid = None
        self.process: psutil.Process | None = psutil.Process(pid) if pid is not None else None
        self.count_syscalls = False
        self.syscall_source = "not counted: the broker is not a local process"
        if self.process is not None and syscalls is not False:
            from pytest_logbench.zerocopy import tracer_support

            supported, reason = tracer_support("perf-stat")
            if syscalls and not supported:
                raise RuntimeError(f"syscall counts requested but unavailable: {reason}")
            self.count_syscalls = supported
            self.syscall_source = "perf stat (syscall tracepoints)" if supported else (
                f"not counted: {reason}")
        elif self.process is not None:
            self.syscall_source = "not counted (syscalls=False)"

    @contextmanager
    def window(self) -> Iterator[_Reading]:
        reading = _Reading()
        if self.process is None:
            yield reading
            return
        with ExitStack() as stack:
            counter = None
            if self.count_syscalls:
                from pytest_logbench.zerocopy import SyscallCounter

                counter = stack.enter_context(SyscallCounter(self.process.pid))
            before, ns_before = self.process.cpu_times(), _thread_ns(self.process.pid)
            yield reading
            after, ns_after = self.process.cpu_times(), _thread_ns(self.process.pid)
        reading.cpu_user = after.user - before.user
        reading.cpu_system = after.system - before.system
        if ns_before is not None and ns_after is not None:
            reading.cpu_seconds = (ns_after - ns_before) / 1e9
        else:
            reading.cpu_seconds = reading.cpu_user + reading.cpu_system
        reading.syscalls = counter.counts if counter is not None else None


def _thread_ns(pid: int) -> int | None:
    """On-CPU nanoseconds of all threads of ``pid`` (schedstat), None where unreadable."""
    total = 0
    try:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
            except FileNotFoundError:  # the thread ended meanwhile
                continue
    except OSError:
        return None
    return total or None


class Meter:
    """The ``measure`` fixture: ``measure(workload)`` and ``measure.compare(a, b)``.

    ``sink`` receives every result (the plugin records it for reports and calls the
    ``pytest_logbench_result`` hook). ``suspect`` says whether a result looks like a
    regression against a saved baseline; such a measurement is taken once more, right away,
    and the result holds the rounds of both. On a shared machine a slow session is mostly a
    passing neighbour, gone seconds later; a regression in the code is still there.
    """

    def __init__(self, *, nodeid: str = "", sink: Callable[[Result], None] | None = None,
                 suspect: Callable[[Result], bool] | None = None) -> None:
        self.nodeid, self.sink, self.suspect = nodeid, sink, suspect

    def __call__(self, workload: Workload, *, rounds: int = 5, warmup: int = 1,
                 name: str | None = None, residency: bool = False,
                 syscalls: bool | None = None) -> Result:
        """Measure one workload: ``warmup`` unrecorded rounds, then ``rounds`` recorded ones.

        ``residency=True`` samples the page cache of the broker's segments around each round
        (outside the timed section) for the residency plot. ``syscalls``: None counts the
        broker's syscalls per round where perf may (~0.3 s per round, outside the timed
        section), True insists, False never counts.
        """
        [result] = self._measure([workload], [name or workload.name], rounds, warmup,
                                 residency, syscalls, group=None)
        return result

    def compare(self, a: Workload, b: Workload, *, rounds: int = 7, warmup: int = 1,
                names: tuple[str, str] | None = None, residency: bool = False,
                syscalls: bool | None = None) -> tuple[Result, Result]:
        """Measure two workloads interleaved, round by round (A B A B ...), so their results
        can be compared per round (``assert_faster``, ``assert_cheaper``, ``paired_ratios``)."""
        if names is None:
            names = (a.name, b.name) if a.name != b.name else (f"{a.name}-a", f"{b.name}-b")
        result_a, result_b = self._measure([a, b], list(names), rounds, warmup, residency,
                                           syscalls, group=uuid.uuid4().hex[:12])
        return result_a, result_b

    def _measure(self, workloads: Sequence[Workload], names: Sequence[str], rounds: int,
                 warmup: int, residency: bool, syscalls: bool | None,
                 group: str | None) -> list[Result]:
        if rounds < 1 or warmup < 0:
            raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds} and {warmup}")
        with ExitStack() as stack:
            for workload in workloads:
                stack.callback(workload.close)
                workload.setup()
            probes = [_BrokerProbe(w.broker, syscalls) for w in workloads]
            results = self._rounds(workloads, names, probes, rounds, warmup, residency, group)
            if self.suspect is not None and any(map(self.suspect, results)):
                again = self._rounds(workloads, names, probes, rounds, warmup, residency, group)
                results = [replace(first, rounds=first.rounds + second.rounds,
                                   residency=first.residency + second.residency, attempt=2)
                           for first, second in zip(results, again, strict=True)]
        if self.sink is not None:
            for result in results:
                self.sink(result)
        return results

    def _rounds(self, workloads: Sequence[Workload], names: Sequence[str],
                probes: Sequence[_BrokerProbe], rounds: int, warmup: int, residency: bool,
                group: str | None) -> list[Result]:
        recorded: list[list[Round]] = [[] for _ in workloads]
        samples: list[list[ResidencySample]] = [[] for _ in workloads]
        for _ in range(warmup):
            for workload in workloads:
                workload.prepare()
                workload.run()
        started = time.perf_counter()
        for index in range(rounds):
            for workload, probe, out, seen in zip(workloads, probes, recorded, samples,
                                                  strict=True):
                workload.prepare()
                if residency:
                    seen.append(_sample(workload.broker, started, index, "prepared"))
                with probe.window() as reading:
                    t0 = time.perf_counter()
                    transfer = workload.run()
                    seconds = time.perf_counter() - t0
                out.append(Round(transfer.bytes, transfer.records, seconds, reading.cpu_user,
                                 reading.cpu_system, reading.cpu_seconds, reading.syscalls))
                if residency:
                    seen.append(_sample(workload.broker, started, index, "ran"))
        return [
            Result(name, tuple(out), workload.describe(), warmup, self.nodeid, group,
                   probe.syscall_source, tuple(seen))
            for workload, name, out, seen, probe in zip(workloads, names, recorded, samples,
                                                        probes, strict=True)
        ]


def _sample(broker: Any, started: float, index: int,
            phase: Literal["prepared", "ran"]) -> ResidencySample:
    from pytest_logbench import pagecache

    now = time.perf_counter() - started
    measured = pagecache.residency(broker.segment_files())
    base = Path(broker.log_dir)
    return ResidencySample(now, index, phase, {
        str(f.path.relative_to(base)): f.fraction for f in measured
    })
