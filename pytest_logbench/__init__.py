"""logbench: a pytest plugin that measures why Kafka is fast (page cache, sendfile, appends).

The public API, importable from here (``from pytest_logbench import FetchWorkload``); each name
is loaded from its module on first use, so the plugin's start-up imports nothing it does not
need.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "pytest_logbench.assertions": (
        "assert_cheaper",
        "assert_faster",
        "assert_fetch_reads",
        "assert_served_from_cache",
        "assert_throughput",
        "assert_zero_copy",
    ),
    "pytest_logbench.brokers": (
        "BrokerOptions",
        "ExternalBroker",
        "LocalOnly",
        "ReferenceBroker",
    ),
    "pytest_logbench.counters": ("MetricsWindow",),
    "pytest_logbench.backlog": ("BacklogDrainWorkload",),
    "pytest_logbench.ceiling": ("RawAppendWorkload", "RawFetchWorkload"),
    "pytest_logbench.client": ("Consumer", "HarnessClient", "Producer", "Transfer"),
    "pytest_logbench.client_workloads": ("ClientConsumeWorkload", "ClientProduceWorkload"),
    "pytest_logbench.end_to_end": ("EndToEndLatencyWorkload",),
    "pytest_logbench.errors": ("KafkaError",),
    "pytest_logbench.lag": ("Fleet", "FleetResult", "MemberResult"),
    "pytest_logbench.latency": ("Latency", "LatencySummary", "Pacer"),
    "pytest_logbench.measure": ("Budget", "Meter"),
    "pytest_logbench.members": ("MemberFailed", "MemberGroup"),
    "pytest_logbench.pagecache": ("PageCache", "evict", "residency", "warm"),
    "pytest_logbench.results": ("METRICS", "Result", "Round", "paired_ratios"),
    "pytest_logbench.stats": ("parse_rate", "parse_size", "ratio_bounds"),
    "pytest_logbench.tables": ("print_comparison",),
    "pytest_logbench.workloads": ("FetchWorkload", "ProduceWorkload", "client_options"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_logbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
