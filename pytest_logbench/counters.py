"""A broker's counters as tests read them: sums of a metrics snapshot's samples, and deltas
over a block of code (what the assertions on reads and zero copy count)."""

from __future__ import annotations

import time
from typing import Any

from pytest_logbench.contract import CountingBroker


def metric_sum(
    snapshot: dict[str, list[dict[str, Any]]], name: str, labels: dict[str, str]
) -> float:
    """Sum of the samples of ``name`` in a metrics snapshot whose labels include ``labels``."""
    return sum(
        sample.get("value", 0.0)
        for sample in snapshot.get(name, [])
        if all(sample["labels"].get(k) == v for k, v in labels.items())
    )


class MetricsWindow:
    """Deltas of a broker's counters over a ``with`` block (``broker.metrics()`` snapshots).

    On exit it waits briefly until every byte a fetch counted was also counted as sent: the
    broker counts a slice as sent after the send completes (and after an injected slowdown's
    sleep), which can be just after the client already has the bytes.
    """

    SETTLE_SECONDS = 2.0

    def __init__(self, broker: CountingBroker) -> None:
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
