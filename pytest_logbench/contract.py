"""What the plugin asks of a broker, as types: an address, and what a local process adds.

The fixtures hand out three kinds of broker (the reference broker, Apache Kafka, an external
cluster) and a launch hook may add more. These protocols say what each part of the plugin
relies on, so a new kind needs only what it is used for: a workload needs a ``Broker``; kill,
restart, CPU readings and the page cache need a ``LocalBroker``; the reference broker's own
counters need a ``CountingBroker``. Where a kind lacks a power it raises ``LocalOnly`` (or
``ReferenceOnly``), which the fixtures turn into a skip with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Snapshot = dict[str, list[dict[str, Any]]]
"""A metrics snapshot: metric name -> samples ``{"labels": {...}, "value": float}``."""


@runtime_checkable
class Broker(Protocol):
    """Every broker: an address for Kafka clients, and (where its log dir is known) its
    segment files."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    def segment_files(
        self, topic: str | None = None, partition: int | None = None
    ) -> list[Path]: ...


@runtime_checkable
class LocalBroker(Broker, Protocol):
    """A broker process on this machine, which the fixtures launched (the launch hook returns
    one, not yet started)."""

    log_dir: Path
    after_start: list[Callable[[Any], None]]

    @property
    def pid(self) -> int: ...

    def start(self) -> LocalBroker: ...

    def stop(self, timeout: float = ...) -> int | None: ...

    def kill(self) -> int | None: ...

    def restart(self, *, kill: bool = False) -> LocalBroker: ...

    def stderr_tail(self, lines: int = ...) -> str: ...


@runtime_checkable
class CountingBroker(Broker, Protocol):
    """A broker that counts what it does in ``logbench_*`` metrics (the reference broker):
    how fetched bytes left it, tail vs history reads, produce and request counts."""

    def metrics(self) -> Snapshot: ...

    def metric(self, name: str, /, **labels: str) -> float: ...
