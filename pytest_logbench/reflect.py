"""``logbench reflect``: the seed's Reflect questions, asked of a live broker.

The seed ends with three questions for "your worst-performing broker": how much of its IO is
tail reads versus history replays right now; which job replays from far behind, and could it run
off-peak; and whether internal traffic pays the TLS zero-copy tax. This command answers them as
far as the broker lets it, and says where the answer came from and what it could not see:

1. Tail vs replay IO. From the broker's metrics when it has them (the reference broker's
   ``logbench_fetch_bytes_total{read=tail|history}``, sampled twice ``--interval`` apart: a rate
   "right now"). Otherwise from consumer-group lags: a group within ``--far`` bytes of the log
   end reads the tail, a group further behind replays history. With ``--log-dir`` (a broker on
   this machine), the page cache's side too: how much of each partition's active and sealed
   segments is resident.
2. Who replays from far behind. Committed offsets from the metrics' lag gauges, or from
   OffsetFetch against the log ends of ListOffsets for the groups ListGroups names (or that
   ``--group`` names, where the broker has no ListGroups), sorted by how far behind.
3. The TLS tax (``--tls-cost``): a short measurement on this machine of the same bytes leaving a
   warm file by sendfile and through a TLS socket (encryption in user space, as Kafka's TLS path
   and Python's ssl must).

Works against the reference broker and a real Kafka (which has no ``logbench_*`` metrics: the
lag path answers there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_logbench.client import HarnessClient, KafkaError
from pytest_logbench.lag import bytes_per_record
from reference_broker.protocol.api_keys import ApiKey

MIB = 1 << 20
DEFAULT_FAR_BYTES = 64 * MIB  # behind by more than a typical tail window: a replay
OFFSET_FETCH_VERSION = 5
METADATA_VERSION = 8


@dataclass
class GroupLag:
    """One group's committed position in one partition, and how far behind the end it is."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag_records: int
    # Segment bytes from the committed offset to the end (the reference broker's metrics), or
    # estimated from the bytes per record of the partition's newest batch.
    lag_bytes: int


@dataclass
class SegmentResidency:
    """How much of one partition's active (newest) and sealed segments is in the page cache."""

    partition: str
    active_bytes: int
    active_resident: float
    sealed_bytes: int
    sealed_resident: float


@dataclass
class Reflection:
    """The answers, with where each came from (``sources``) and what could not be seen."""

    tail_bytes: float | None = None  # per second over the interval (metrics), else None
    history_bytes: float | None = None
    tail_total: float | None = None  # since the broker started (metrics)
    history_total: float | None = None
    groups: list[GroupLag] = field(default_factory=list)
    residency: list[SegmentResidency] = field(default_factory=list)
    tls: dict[str, float] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _scrape(url: str) -> dict[str, list[dict[str, Any]]]:
    """The broker's metrics as JSON: ``/metrics.json`` of the given ``/metrics`` or base URL."""
    if not url.endswith(".json"):
        url = url.rstrip("/").removesuffix("/metrics") + "/metrics.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _sum(metrics: dict[str, list[dict[str, Any]]], name: str, **labels: str) -> float:
    return sum(
        sample["value"]
        for sample in metrics.get(name, [])
        if all(sample["labels"].get(k) == v for k, v in labels.items())
    )


def _io_from_metrics(reflection: Reflection, url: str, interval: float) -> None:
    before = _scrape(url)
    time.sleep(interval)
    after = _scrape(url)
    name = "logbench_fetch_bytes_total"
    if name not in after:
        reflection.notes.append(f"{url} has no {name}: tail/replay IO from group lags instead")
        return
    for read in ("tail", "history"):
        total = _sum(after, name, read=read)
        rate = (total - _sum(before, name, read=read)) / interval
        setattr(reflection, f"{read}_total", total)
        setattr(reflection, f"{read}_bytes", rate)
    reflection.sources["io"] = f"broker metrics ({name}, sampled {interval:g} s apart)"
    for sample in after.get("logbench_consumer_group_lag_records", []):
        labels = sample["labels"]
        lag_bytes = _sum(after, "logbench_consumer_group_lag_bytes", **labels)
        end = _sum(
            after, "logbench_log_end_offset", topic=labels["topic"], partition=labels["partition"]
        )
        reflection.groups.append(
            GroupLag(
                labels["group"],
                labels["topic"],
                int(labels["partition"]),
                int(end - sample["value"]),
                int(end),
                int(sample["value"]),
                int(lag_bytes),
            )
        )
    if reflection.groups:
        reflection.sources["groups"] = "broker metrics (logbench_consumer_group_lag_*)"


def _api_keys(client: HarnessClient) -> set[int]:
    response = client.request(ApiKey.API_VERSIONS, 0, {})
    return {entry["api_key"] for entry in response["api_keys"]}


def _list_groups(client: HarnessClient, reflection: Reflection) -> list[str]:
    """The broker's groups by ListGroups, where the broker has it."""
    if ApiKey.LIST_GROUPS not in _api_keys(client):
        reflection.notes.append(
            "this broker has no ListGroups: name groups with --group, or pass --metrics"
        )
        return []
    response = client.request(ApiKey.LIST_GROUPS, 0, {})
    return [group["group_id"] for group in response.get("groups", [])]


def _lags_from_offsets(client: HarnessClient, groups: list[str]) -> list[GroupLag]:
    """Committed offsets (OffsetFetch, all topics) against log ends (ListOffsets)."""
    found = []
    for group in groups:
        response = client.group_request(
            group,
            ApiKey.OFFSET_FETCH,
            OFFSET_FETCH_VERSION,
            {"group_id": group, "topics": None},
            lambda r: [r.get("error_code", 0)],
        )
        for topic in response["topics"]:
            for part in topic["partitions"]:
                if part["error_code"] or part["committed_offset"] < 0:
                    continue
                name, index = topic["name"], part["partition_index"]
                end = client.list_offset(name, index, -1)[0]
                lag = max(0, end - part["committed_offset"])
                per_record = bytes_per_record(client, name, index, end)
                found.append(
                    GroupLag(
                        group,
                        name,
                        index,
                        part["committed_offset"],
                        end,
                        lag,
                        int(lag * per_record),
                    )
                )
    return found


def _residency(reflection: Reflection, log_dir: Path) -> None:
    from pytest_logbench.pagecache import residency

    for directory in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        name, _, index = directory.name.rpartition("-")
        if not index.isdigit() or name.startswith("__"):
            continue
        segments = sorted(directory.glob("*.log"), key=lambda p: int(p.stem))
        if not segments:
            continue
        active, sealed = residency(segments[-1]), residency(segments[:-1])
        reflection.residency.append(
            SegmentResidency(
                directory.name,
                active.size,
                active.fraction,
                sealed.size,
                sealed.fraction,
            )
        )
    reflection.sources["residency"] = f"page cache of {log_dir} (cachestat/mincore)"


def reflect(
    bootstrap: str,
    *,
    metrics: str | None = None,
    log_dir: str | Path | None = None,
    groups: list[str] | None = None,
    interval: float = 2.0,
    tls_cost: bool = False,
    **connection: Any,
) -> Reflection:
    """Ask a live broker the seed's questions; see the module docstring for the sources."""
    reflection = Reflection()
    if metrics is not None:
        _io_from_metrics(reflection, metrics, interval)
    with HarnessClient(bootstrap, **connection) as client:
        if not reflection.groups:
            names = list(groups or []) or _list_groups(client, reflection)
            reflection.groups = _lags_from_offsets(client, names)
            if names:
                reflection.sources["groups"] = (
                    "OffsetFetch + ListOffsets (bytes estimated from each partition's newest batch)"
                )
    reflection.groups.sort(key=lambda g: (-g.lag_bytes, -g.lag_records))
    if log_dir is not None:
        _residency(reflection, Path(log_dir))
    if tls_cost:
        from pytest_logbench.tls_cost import measure_tls_cost

        reflection.tls = measure_tls_cost()
        reflection.sources["tls"] = "measured on this machine (loopback, warm file)"
    return reflection


def render(reflection: Reflection, far_bytes: int = DEFAULT_FAR_BYTES) -> str:
    """The answers as text, one section per question."""
    out = ["1. How much of the IO is tail reads vs history replays right now?"]
    if reflection.tail_bytes is not None and reflection.history_bytes is not None:
        now = reflection.tail_bytes + reflection.history_bytes
        share = reflection.history_bytes / now if now else 0.0
        total = (reflection.tail_total or 0) + (reflection.history_total or 0)
        ever = (reflection.history_total or 0) / total if total else 0.0
        out.append(
            f"   now: tail {reflection.tail_bytes / 1e6:,.1f} MB/s, history "
            f"{reflection.history_bytes / 1e6:,.1f} MB/s ({share:.0%} replay); since start: "
            f"{(reflection.tail_total or 0) / MIB:,.0f} MiB tail, "
            f"{(reflection.history_total or 0) / MIB:,.0f} MiB history ({ever:.0%} replay)"
        )
    elif reflection.groups:
        far = [g for g in reflection.groups if g.lag_bytes > far_bytes]
        out.append(
            f"   no IO metrics here: from group lags, {len(far)} of {len(reflection.groups)} "
            f"group partitions are more than {far_bytes / MIB:,.0f} MiB behind (replaying); "
            "the rest read the tail"
        )
    else:
        out.append("   unknown: no metrics (--metrics) and no groups to read lags from")
    for seg in reflection.residency:
        out.append(
            f"   {seg.partition}: active segment {seg.active_resident:.0%} of "
            f"{seg.active_bytes / MIB:,.1f} MiB cached, sealed {seg.sealed_resident:.0%} of "
            f"{seg.sealed_bytes / MIB:,.1f} MiB"
        )
    out.append("2. Which groups replay from far behind (could they run off-peak)?")
    if not reflection.groups:
        out.append("   no committed group offsets found")
    for g in reflection.groups:
        verdict = "REPLAYING from far behind" if g.lag_bytes > far_bytes else "near the tail"
        out.append(
            f"   {g.group:<20} {g.topic}-{g.partition}: committed {g.committed:,} of "
            f"{g.end:,} ({g.lag_records:,} records, {g.lag_bytes / MIB:,.1f} MiB behind): "
            f"{verdict}"
        )
    out.append("3. Is traffic paying the TLS zero-copy tax?")
    if reflection.tls is None:
        out.append("   not measured (pass --tls-cost for a short measurement on this machine)")
    else:
        t = reflection.tls
        out.append(
            f"   this machine: sendfile {t['sendfile_mb_s']:,.0f} MB/s, TLS "
            f"{t['tls_mb_s']:,.0f} MB/s ({t['sendfile_mb_s'] / t['tls_mb_s']:.1f}x); sender CPU "
            f"{t['sendfile_cpu_s_per_gb']:.2f} vs {t['tls_cpu_s_per_gb']:.2f} s/GB"
        )
    out.append("sources: " + "; ".join(f"{k}: {v}" for k, v in reflection.sources.items()))
    out += [f"note: {note}" for note in reflection.notes]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--metrics", help="the broker's metrics URL (reference broker)")
    parser.add_argument("--log-dir", help="the broker's log dir, when it is on this machine")
    parser.add_argument(
        "--group", action="append", default=[], help="a consumer group (repeatable)"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="metrics sample (s)")
    parser.add_argument(
        "--far", type=float, default=DEFAULT_FAR_BYTES / MIB, help="MiB behind = a replay"
    )
    parser.add_argument("--tls-cost", action="store_true", help="measure TLS vs sendfile")
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        reflection = reflect(
            args.bootstrap,
            metrics=args.metrics,
            log_dir=args.log_dir,
            groups=args.group,
            interval=args.interval,
            tls_cost=args.tls_cost,
        )
    except (OSError, KafkaError) as exc:  # unreachable broker or metrics, refused request
        print(f"logbench reflect: {args.bootstrap}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(reflection), indent=2))
    else:
        print(render(reflection, int(args.far * MIB)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``logbench reflect ...`` (the console script)."""
    parser = argparse.ArgumentParser(prog="logbench")
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("reflect", help="the seed's Reflect questions"))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
