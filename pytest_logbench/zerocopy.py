"""Evidence of how a broker's payload bytes leave it: its own counters and the kernel's view.

Why two sources: the broker's counters say which path it *meant* to take (``zerocopy``,
``copy``, ``tls``); a bug or an unexpected fallback (asyncio's ``loop.sendfile`` silently falls
back to read + send when allowed) would not show there. The kernel sees what the process did:

* ``perf record`` on the syscall tracepoints (``syscalls:sys_{enter,exit}_sendfile64`` and the
  read family), attached to the broker for the window only, or
* ``strace -f -y`` attached for the window (heavier on the traced process, but needs no
  tracepoint permissions; ``-y`` names each descriptor's file).

From either trace we count the bytes ``sendfile`` moved, and the bytes the broker read from its
segment files into its own memory. A zero-copy fetch reads only batch headers that way (61 bytes
each, to find the batch holding an offset in the sparse index); a copy or TLS fetch reads every
payload byte. ``/proc/PID/io`` cannot tell the two apart: it counts sendfile bytes as read too.

The tracers are in ``syscalls.py``; where neither may run here, the zero-copy check falls back
to the counters, saying so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from pytest_logbench.brokers import ReferenceOnly
from pytest_logbench.contract import Broker
from pytest_logbench.counters import MetricsWindow
from pytest_logbench.syscalls import (
    Evidence,
    StraceTrace,
    SyscallTally,
    SyscallTrace,
    trace_for,
)

# --- the zero-copy verdict -------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{int(n):,} B"


@dataclass(frozen=True)
class ZeroCopyReport:
    """The verdict on one window, with the figures of every source that was used."""

    pid: int
    payload_bytes: int  # from the broker's counters, else what the trace saw leave
    sent: dict[str, int] | None  # broker counters: bytes sent by path; None: it has none
    trace: SyscallTally | None
    fallback: str  # why the kernel (or, with ``sent`` None, the broker) was not asked
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def evidence(self) -> str:
        if self.trace is None:
            return f"broker counters only ({self.fallback})"
        source = (
            "perf tracepoints syscalls:sys_*_sendfile64 and the read family"
            if self.trace.tool == "perf"
            else "strace -f -y attached to the broker"
        )
        if self.sent is None:
            return f"{source} only ({self.fallback})"
        return f"broker counters + {source}"

    def message(self) -> str:
        verdict = "zero-copy" if self.ok else "NOT zero-copy"
        counters = (
            "none"
            if self.sent is None
            else ", ".join(f"{path} {_mb(n)}" for path, n in self.sent.items())
        )
        lines = [
            f"broker pid {self.pid}: {verdict}; evidence: {self.evidence}",
            f"  payload fetched in the window: {_mb(self.payload_bytes)}",
            f"  broker counters: {counters}",
        ]
        if self.trace is not None:
            t = self.trace
            lines.append(
                f"  kernel ({t.tool}): sendfile {_mb(t.sendfile_bytes)} in "
                f"{t.sendfile_calls} calls; segment bytes read into the broker "
                f"{_mb(t.copied_bytes)} in {t.copied_calls} calls (+ {t.header_calls} "
                f"batch-header reads, {_mb(t.header_bytes)})"
            )
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def check_zero_copy(
    broker: Broker, during: Callable[[], object], *, evidence: Evidence = "auto"
) -> ZeroCopyReport:
    """Run ``during`` and judge whether every payload byte it fetched left by sendfile.

    The counters are read before the tracer attaches and after it detached, so the tracer sees
    exactly the window and the counters see all of it. A broker without logbench's counters
    (Apache Kafka) is judged on the trace alone: the payload is then what left by sendfile
    plus the segment bytes read into the broker, and without a tracer there is no evidence
    (``ReferenceOnly``, a skip for tests).
    """
    pid = broker.pid
    tracer, fallback = trace_for(evidence, pid)
    try:
        broker.metrics()
    except ReferenceOnly as exc:
        if tracer is None:
            raise ReferenceOnly(
                f"no evidence of zero-copy: {exc}, and no tracer ({fallback})"
            ) from None
        with tracer:
            during()
        trace = tracer.tally
        payload = trace.sendfile_bytes + trace.copied_bytes
        return ZeroCopyReport(
            pid, payload, None, trace, f"{exc}", tuple(_problems(payload, None, trace))
        )
    window = tracer if tracer is not None else contextlib.nullcontext()
    with MetricsWindow(broker) as counters, window:
        during()
    payload = int(counters.delta("logbench_fetch_bytes_total"))
    sent = {
        path: int(counters.delta("logbench_bytes_sent_total", path=path))
        for path in ("zerocopy", "copy", "tls")
    }
    trace = tracer.tally if isinstance(tracer, SyscallTrace | StraceTrace) else None
    return ZeroCopyReport(
        pid, payload, sent, trace, fallback, tuple(_problems(payload, sent, trace))
    )


def _problems(payload: int, sent: dict[str, int] | None, trace: SyscallTally | None) -> list[str]:
    if payload == 0:
        return ["no payload bytes were fetched in the window, so nothing shows zero-copy"]
    problems = []
    if sent is not None:
        problems += _counter_problems(payload, sent)
    if trace is not None:
        if trace.sendfile_bytes < payload:
            problems.append(
                f"{trace.tool}: sendfile moved only {_mb(trace.sendfile_bytes)} of "
                f"{_mb(payload)} payload"
            )
        if trace.copied_bytes:
            problems.append(
                f"{trace.tool}: {trace.copied_calls} reads copied "
                f"{_mb(trace.copied_bytes)} of segment data into the broker's memory"
            )
    return problems


def _counter_problems(payload: int, sent: dict[str, int]) -> list[str]:
    problems = []
    if sent["copy"]:
        problems.append(
            f"broker counters: {_mb(sent['copy'])} left by the copy path "
            "(pread into user space + send): a --copy broker"
        )
    if sent["tls"]:
        problems.append(
            f"broker counters: {_mb(sent['tls'])} left by the TLS path (pread, "
            "encrypt in user space, send): TLS cannot use sendfile"
        )
    if sent["zerocopy"] < payload:
        problems.append(
            f"broker counters: only {_mb(sent['zerocopy'])} of {_mb(payload)} "
            "payload left by sendfile"
        )
    return problems
