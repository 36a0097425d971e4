"""What a measurement keeps: every round's figures, and the results built from them.

A ``Round`` is one timed run of a workload with what the broker spent on it and, where the
workload has one, the same round of its *control* (the machine's ceiling for that workload,
measured back to back). A ``Result`` holds all rounds of one workload and derives every metric
from them, so reports, baselines and assertions all read the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from pytest_logbench.brokers import NotMeasuredHere
from pytest_logbench.latency import PERCENTILES, Latency, LatencySummary, summarize_encoded
from pytest_logbench.stats import Stats, format_number, ratio, summarize

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
        Metric(
            "seconds",
            "s",
            False,
            "wall-clock seconds of the round's timed part (for a backlog drain: the drain time)",
        ),
        Metric("cpu", "s/GB", False, "broker CPU seconds (user + system) per 10^9 payload bytes"),
        Metric(
            "syscalls",
            "calls/GB",
            False,
            "broker syscalls counted by perf per 10^9 payload bytes: a count, not a time",
        ),
        Metric(
            "relative",
            "x ceiling",
            True,
            "throughput as a fraction of the control's (the machine's ceiling for the same "
            "workload, measured in the same round): load slows both, a regression one",
        ),
        Metric(
            "relative_cpu",
            "x ceiling",
            False,
            "broker CPU per GB as a multiple of the control's CPU per GB, same round",
        ),
        *(
            Metric(
                name,
                "ms",
                False,
                f"the round's {name.removeprefix('latency_')} request latency (produce ack, "
                "fetch response; end to end where the workload says so), from the intended "
                "send time where the workload is paced",
            )
            for name in (*PERCENTILES, "latency_max")
        ),
    )
}
LATENCY_METRICS = (*PERCENTILES, "latency_max")


@dataclass(frozen=True)
class Round:
    """One timed run of a workload and what the broker spent on it.

    ``cpu_seconds`` is the precise total (schedstat, ns); ``cpu_user``/``cpu_system`` are
    psutil's split in clock ticks. All three are None when the broker is not a local process.
    ``syscalls`` maps syscall names to counts (perf tracepoints), None when not counted.
    ``control_*`` describe the same round of the workload's control (the raw peer moving the
    same bytes: the machine's ceiling at that moment), None without a control.
    ``latency`` is the round's request latencies, an encoded HdrHistogram (``latency.py``),
    None when the workload records none.
    """

    bytes: int
    records: int
    seconds: float
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_seconds: float | None = None
    syscalls: dict[str, int] | None = None
    control_bytes: int | None = None
    control_seconds: float | None = None
    control_cpu_seconds: float | None = None
    latency: str | None = None

    def value(self, metric: str) -> float | None:
        """This round's figure for ``metric`` (see ``METRICS``), None when not measured."""
        if metric == "throughput":
            return self.bytes / self.seconds / 1e6
        if metric == "records":
            return self.records / self.seconds
        if metric == "seconds":
            return self.seconds
        if metric == "cpu":
            return None if self.cpu_seconds is None else self.cpu_seconds / self.bytes * 1e9
        if metric == "syscalls":
            if self.syscalls is None:
                return None
            return sum(self.syscalls.values()) / self.bytes * 1e9
        if metric == "relative":
            if not self.control_bytes or not self.control_seconds:
                return None
            return (self.bytes / self.seconds) / (self.control_bytes / self.control_seconds)
        if metric == "relative_cpu":
            if self.cpu_seconds is None or not self.control_cpu_seconds or not self.control_bytes:
                return None
            return (self.cpu_seconds / self.bytes) / (self.control_cpu_seconds / self.control_bytes)
        if metric in LATENCY_METRICS:
            return None if self.latency is None else summarize_encoded(self.latency).metric(metric)
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")


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
    uid: str = ""  # the same for every extension of one measurement (reports replace it)
    looks: int = 1  # how often deciders may judge this measurement as it grows (``Budget``)
    # Records more rounds of this measurement and of those measured with it (``Meter``):
    # returns the extended results, or None once the budget is spent. Not serialised.
    more: Callable[[], list[Result] | None] | None = field(default=None, compare=False, repr=False)

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
            message = f"{self.key}: {metric} was not measured ({self._why_missing(metric)})"
            if self.workload.get("broker") == "external":
                raise NotMeasuredHere(message)
            raise ValueError(message)
        return summarize(values)

    def _why_missing(self, metric: str) -> str:
        if metric == "cpu":
            return "the broker is not a local process"
        if metric == "syscalls":
            return f"syscalls {self.syscall_source}"
        if metric in LATENCY_METRICS and self.rounds:
            return "the workload records no latency"
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

    def latency(self) -> LatencySummary:
        """Percentiles of all recorded rounds' latencies together (their histograms added):
        the run's p99, where ``stats("latency_p99")`` is the spread of the rounds' p99s."""
        merged = Latency.merge(Latency.decode(r.latency) for r in self.rounds if r.latency)
        if merged is None:
            raise ValueError(f"{self.key}: latency was not measured (the workload records none)")
        return merged.summary()

    def describe(self, metric: str = "throughput") -> str:
        """One line for messages: median, min-max, IQR and rounds of ``metric``."""
        s, unit = self.stats(metric), METRICS[metric]
        return (
            f"{self.key}: median {unit.format(s.median)} (min {format_number(s.min)}, "
            f"max {format_number(s.max)}, IQR {format_number(s.iqr)}, {s.n} rounds)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: raw rounds plus the statistics of every measured metric."""
        data = asdict(replace(self, more=None))
        del data["more"]
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
            uid=data.get("uid", ""),
            looks=data.get("looks", 1),
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
        raise ValueError(
            f"{missing.key}: {metric} was not measured ({missing._why_missing(metric)})"
        )
    return [ratio(x, y) for x, y in zip(values_a, values_b, strict=True)]
