"""Counters that show where the broker's bytes went, served as Prometheus text and as JSON.

The seed's claims are about paths: bytes leaving by sendfile versus by a user-space copy, reads
from the warm tail versus replays of history. Each counter here exists so a test or a tutorial can
ask the broker which path it took instead of guessing from timings.

Every name is documented in ``METRIC_HELP``; the JSON form carries the same names and labels.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# Request latency buckets in seconds: fetch long-polls sit at max_wait_ms (500 ms by default).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

METRIC_HELP: dict[str, tuple[str, str]] = {
    "logbench_bytes_sent_total": (
        "counter",
        "Record bytes of fetch responses shipped to clients, by path: zerocopy (os.sendfile from "
        "the segment file), copy (pread into user space, then send), tls (pread, encrypt, send).",
    ),
    "logbench_slices_sent_total": (
        "counter",
        "File slices (one partition's records in one fetch response) shipped, by path.",
    ),
    "logbench_response_header_bytes_total": (
        "counter",
        "Bytes of responses built in user space (headers and small bodies), all API keys.",
    ),
    "logbench_fetch_bytes_total": (
        "counter",
        "Record bytes served by fetches, by read: tail when the slice starts within "
        "tail_window_bytes of the partition's log end (data the producer just wrote, likely in "
        "the page cache), history otherwise (a lagging consumer or a replay).",
    ),
    "logbench_fetch_reads_total": ("counter", "Partition reads served by fetches, by read."),
    "logbench_fetch_warmed_bytes_total": (
        "counter",
        "History fetch bytes read into the page cache by a worker thread before sending "
        "(--warm-history-fetches).",
    ),
    "logbench_produce_bytes_total": ("counter", "Record batch bytes appended by produce requests."),
    "logbench_produce_records_total": ("counter", "Records appended by produce requests."),
    "logbench_produce_rejected_batches_total": (
        "counter",
        "Produce partition requests rejected (bad CRC, too large, bad records...), by error.",
    ),
    "logbench_requests_total": ("counter", "Requests handled, by API name."),
    "logbench_request_errors_total": (
        "counter",
        "Connections closed because a frame could not be handled, by cause.",
    ),
    "logbench_request_seconds": ("histogram", "Time from request read to response sent, by API."),
    "logbench_connections": ("gauge", "Client connections open now."),
    "logbench_connections_refused_total": (
        "counter",
        "New connections closed at once, by the limit they hit: max.connections or "
        "max.connections.per.ip.",
    ),
    "logbench_idle_connections_closed_total": (
        "counter",
        "Connections closed after sending nothing for connections.max.idle.ms.",
    ),
    "logbench_request_memory_bytes": (
        "gauge",
        "Bytes reserved for request frames being read or handled (queued.max.request.bytes).",
    ),
    "logbench_request_memory_waiting": (
        "gauge",
        "Connections not being read because their next frame does not fit the request memory.",
    ),
    "logbench_auto_create_deferred_topics_total": (
        "counter",
        "Topics a request would have auto-created past max_created_partitions_per_request; "
        "answered LEADER_NOT_AVAILABLE so the client retries.",
    ),
    "logbench_offsets_skipped_records": (
        "gauge",
        "Records of __consumer_offsets that the loader skipped at start-up (not commits).",
    ),
    "logbench_log_end_offset": ("gauge", "Next offset to be assigned, by topic and partition."),
    "logbench_log_start_offset": ("gauge", "First offset still in the log, by topic, partition."),
    "logbench_log_size_bytes": ("gauge", "Bytes in the partition's segments."),
    "logbench_consumer_group_lag_records": (
        "gauge",
        "Log end offset minus the group's committed offset, by group, topic and partition.",
    ),
    "logbench_consumer_group_lag_bytes": (
        "gauge",
        "Segment bytes from the batch holding the committed offset to the log end.",
    ),
}

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


class Metrics:
    """The broker's counters. Single-threaded: only the event loop touches them."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)
        self._gauge_sources: list[Callable[[], Iterable[tuple[str, Labels, float]]]] = []

    def add(self, name: str, value: float = 1, **labels: str) -> None:
        """Add ``value`` to the counter ``name`` with these labels."""
        self._counters[name][tuple(sorted(labels.items()))] += value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one observation of a latency histogram."""
        key = tuple(sorted(labels.items()))
        self._histograms[name].setdefault(key, _Histogram()).observe(seconds)

    def gauge_source(self, source: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
        """Register a function that yields ``(name, labels, value)`` gauges when scraped.

        Gauges such as log end offsets and consumer lag are read from the live state at scrape
        time rather than mirrored into counters that could drift from it.
        """
        self._gauge_sources.append(source)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one counter (0 when never incremented)."""
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """All metrics as ``{name: [{"labels": {...}, "value": v}, ...]}`` (histograms: sum,
        count and cumulative buckets)."""
        out: dict[str, list[dict[str, object]]] = defaultdict(list)
        for name, series in self._counters.items():
            for labels, value in series.items():
                out[name].append({"labels": dict(labels), "value": value})
        for name, hists in self._histograms.items():
            for labels, hist in hists.items():
                cumulative, running = {}, 0
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist.counts, strict=True):
                    running += count
                    cumulative[str(bound)] = running
                out[name].append(
                    {
                        "labels": dict(labels),
                        "sum": hist.total,
                        "count": hist.count,
                        "buckets": cumulative,
                    }
                )
        for source in self._gauge_sources:
            for name, labels, value in source():
                out[name].append({"labels": dict(labels), "value": value})
        return dict(out)

    def to_json(self) -> str:
        """The snapshot as JSON, for tests and the plugin."""
        return json.dumps(self.snapshot(), sort_keys=True)

    def to_prometheus(self) -> str:
        """The snapshot in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for name, series in sorted(self.snapshot().items()):
            kind, help_text = METRIC_HELP.get(name, ("untyped", ""))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for sample in series:
                labels = sample["labels"]
                assert isinstance(labels, dict)
                if kind == "histogram":
                    buckets = sample["buckets"]
                    assert isinstance(buckets, dict)
                    for bound, count in buckets.items():
                        le = "+Inf" if bound == "inf" else bound
                        lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}")
                    lines.append(f"{name}_sum{_labels(labels)} {sample['sum']}")
                    lines.append(f"{name}_count{_labels(labels)} {sample['count']}")
                else:
                    lines.append(f"{name}{_labels(labels)} {_number(sample['value'])}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: object) -> str:
    assert isinstance(value, int | float)
    return str(int(value)) if float(value).is_integer() else repr(float(value))
