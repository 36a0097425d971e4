"""Measurements of broker workloads that hold up on noisy shared machines.

Why this module exists: a single timing of "fetch 64 MiB" on a shared 2-core VM says as much
about the neighbours as about the broker. A measurement here therefore

* runs a workload (produce, fetch cold or warm, a consumer fleet) for several rounds after a
  warm-up, and keeps every round: bytes, records, wall time, request latencies (an
  HdrHistogram), the broker's CPU and, where perf may watch the broker, its syscall counts;
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
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_logbench.brokers import LocalOnly
from pytest_logbench.contract import Broker
from pytest_logbench.results import ResidencySample, Result, Round

if TYPE_CHECKING:
    import psutil

    from pytest_logbench.client import Transfer
    from pytest_logbench.workloads import Workload

# The plugin imports this module at every pytest start: the client (and with it the broker's
# wire codec), ssl, psutil and the page-cache module are imported where first needed.

# --- the meter -------------------------------------------------------------------------------


@dataclass
class _Reading:
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_seconds: float | None = None
    syscalls: dict[str, int] | None = None


class _BrokerProbe:
    """Reads a broker's CPU (and syscall counts with perf) around a timed section."""

    def __init__(self, broker: Broker, syscalls: bool | None) -> None:
        import psutil

        try:
            pid = broker.pid
        except (LocalOnly, AttributeError):
            pid = None
        self.process: psutil.Process | None = psutil.Process(pid) if pid is not None else None
        self.count_syscalls = False
        self.syscall_source = "not counted: the broker is not a local process"
        if self.process is not None and syscalls is not False:
            from pytest_logbench.syscalls import tracer_support

            supported, reason = tracer_support("perf-stat")
            if syscalls and not supported:
                raise RuntimeError(f"syscall counts requested but unavailable: {reason}")
            self.count_syscalls = supported
            self.syscall_source = (
                "perf stat (syscall tracepoints)" if supported else (f"not counted: {reason}")
            )
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
                from pytest_logbench.syscalls import SyscallCounter

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


Verdict = Literal["regressed", "ok", "undecided"]


@dataclass(frozen=True)
class Budget:
    """How far a measurement may be extended while its verdict is undecided: at most
    ``max_rounds`` recorded rounds per workload and ``seconds`` of measuring in all.

    Looking at the evidence after every batch of rounds and stopping once it decides raises
    the chance of a wrong verdict with every look; deciders therefore spend their error
    allowance over ``looks`` (Bonferroni), which keeps the stated confidence honest."""

    max_rounds: int = 25
    seconds: float = 90.0

    def looks(self, rounds: int) -> int:
        """How many times a measurement of ``rounds`` rounds per batch can be judged."""
        return max(1, math.ceil(self.max_rounds / max(1, rounds)))


# A round beside its control runs in this many alternating parts (when both workloads can).
CONTROL_PARTS = 4


class _Session:
    """The open workloads of one ``measure`` / ``measure.compare`` call, able to record more
    rounds later: the assertions and the gate extend a measurement while it is undecided."""

    def __init__(
        self,
        meter: Meter,
        workloads: Sequence[Workload],
        names: Sequence[str],
        controls: Sequence[Workload | None],
        rounds: int,
        warmup: int,
        residency: bool,
        syscalls: bool | None,
        group: str | None,
    ) -> None:
        self.meter, self.workloads, self.names = meter, list(workloads), list(names)
        self.controls, self.rounds, self.warmup = list(controls), rounds, warmup
        self.residency, self.group = residency, group
        self.probes = [_BrokerProbe(w.broker, syscalls) for w in workloads]
        self.control_probes = [
            None if c is None else _BrokerProbe(c.broker, False) for c in controls
        ]
        self.recorded: list[list[Round]] = [[] for _ in workloads]
        self.samples: list[list[ResidencySample]] = [[] for _ in workloads]
        self.started = time.perf_counter()
        self.looks = meter.budget.looks(rounds)
        self.uid = uuid.uuid4().hex[:12]
        self.results: list[Result] = []

    def record(self, rounds: int) -> list[Result]:
        for _ in range(rounds):
            number = len(self.recorded[0])
            for i, workload in enumerate(self.workloads):
                self._round(i, workload, number, control_first=(number + i) % 2 == 1)
        self.results = [
            Result(
                name,
                tuple(out),
                {**workload.describe(), **_control_traits(control)},
                self.warmup,
                self.meter.nodeid,
                self.group,
                probe.syscall_source,
                tuple(seen),
                uid=self._uid(i),
                looks=self.looks,
                more=self.extend,
            )
            for i, (workload, control, name, out, seen, probe) in enumerate(
                zip(
                    self.workloads,
                    self.controls,
                    self.names,
                    self.recorded,
                    self.samples,
                    self.probes,
                    strict=True,
                )
            )
        ]
        if self.meter.sink is not None:
            for result in self.results:
                self.meter.sink(result)
        return self.results

    def _uid(self, index: int) -> str:
        return f"{self.uid}-{index}"

    def extend(self) -> list[Result] | None:
        """Record one more batch of rounds; None once the budget is spent."""
        budget = self.meter.budget
        if (
            len(self.recorded[0]) + self.rounds > budget.max_rounds
            or time.perf_counter() - self.started > budget.seconds
        ):
            return None
        return self.record(self.rounds)

    def _round(self, i: int, workload: Workload, number: int, control_first: bool) -> None:
        control = self.controls[i]
        workload.prepare()
        if control is not None:
            control.prepare()
        if self.residency:
            self.samples[i].append(_sample(workload.broker, self.started, number, "prepared"))
        if control is None:
            transfer, seconds, reading = _timed(workload, self.probes[i])
            extra: dict[str, Any] = {}
        else:
            transfer, seconds, reading, extra = self._beside_control(
                i, workload, control, control_first
            )
        self.recorded[i].append(
            Round(
                transfer.bytes,
                transfer.records,
                seconds,
                reading.cpu_user,
                reading.cpu_system,
                reading.cpu_seconds,
                reading.syscalls,
                **extra,
                latency=None if transfer.latency is None else transfer.latency.encode(),
            )
        )
        if self.residency:
            self.samples[i].append(_sample(workload.broker, self.started, number, "ran"))

    def _beside_control(
        self, i: int, workload: Workload, control: Workload, control_first: bool
    ) -> tuple[Transfer, float, _Reading, dict[str, Any]]:
        """Run a round and its control in ``CONTROL_PARTS`` alternating parts (B C C B B C C B
        ...), so that a burst of load on the machine lands on both alike; each process's CPU
        is read over the whole round (it idles while the other works)."""
        from pytest_logbench.client import Transfer
        from pytest_logbench.latency import Latency

        probe, control_probe = self.probes[i], self.control_probes[i]
        assert control_probe is not None
        parts = CONTROL_PARTS if _has_parts(workload) and _has_parts(control) else 1
        moved = {id(workload): [0, 0, 0.0], id(control): [0, 0, 0.0]}  # bytes, records, seconds
        latencies = []
        with probe.window() as reading, control_probe.window() as control_reading:
            for part in range(parts):
                pair = (
                    (control, workload) if (part % 2 == 1) != control_first else (workload, control)
                )
                for each in pair:
                    t0 = time.perf_counter()
                    done = each.run_part(part, parts) if parts > 1 else each.run()
                    tally = moved[id(each)]
                    tally[0] += done.bytes
                    tally[1] += done.records
                    tally[2] += time.perf_counter() - t0
                    if each is workload:
                        latencies.append(done.latency)
        ours, theirs = moved[id(workload)], moved[id(control)]
        transfer = Transfer(
            int(ours[0]), int(ours[1]), 0, 0, ours[2], latency=Latency.merge(latencies)
        )
        extra = {
            "control_bytes": int(theirs[0]),
            "control_seconds": theirs[2],
            "control_cpu_seconds": control_reading.cpu_seconds,
        }
        return transfer, ours[2], reading, extra


def _has_parts(workload: Workload) -> bool:
    return callable(getattr(workload, "run_part", None))


def _timed(workload: Workload, probe: _BrokerProbe) -> tuple[Transfer, float, _Reading]:
    with probe.window() as reading:
        t0 = time.perf_counter()
        transfer = workload.run()
        seconds = time.perf_counter() - t0
    if getattr(workload, "seconds_by_tool", False):  # e.g. a JVM tool: not its start-up
        seconds = transfer.seconds
    return transfer, seconds, reading


class Meter:
    """The ``measure`` fixture: ``measure(workload)`` and ``measure.compare(a, b)``.

    ``sink`` receives every result, again each time a result is extended (the plugin records
    it for reports and calls the ``pytest_logbench_result`` hook). ``decide`` is the CI gate's
    view of a result against its baseline: while it says ``undecided``, more rounds are
    recorded, up to ``budget``. ``reference`` gives a workload's twin on the broker of a
    reference revision (``revisions.ReferenceTwins.twin``): where it has one, that twin is the
    control instead of the raw peer. Workloads stay open until ``close`` (the fixture's
    teardown), so assertions can extend a measurement whose rounds do not yet decide.
    """

    def __init__(
        self,
        *,
        nodeid: str = "",
        sink: Callable[[Result], None] | None = None,
        decide: Callable[[Result], Verdict] | None = None,
        budget: Budget | None = None,
        reference: Callable[[Workload], Workload | None] | None = None,
    ) -> None:
        self.nodeid, self.sink, self.decide = nodeid, sink, decide
        self.budget = budget or Budget()
        self.reference = reference
        self._stack = ExitStack()

    def close(self) -> None:
        """Close every workload measured (and its control)."""
        self._stack.close()

    def __call__(
        self,
        workload: Workload,
        *,
        rounds: int = 5,
        warmup: int = 1,
        name: str | None = None,
        residency: bool = False,
        syscalls: bool | None = None,
        control: bool | None = None,
    ) -> Result:
        """Measure one workload: ``warmup`` unrecorded rounds, then ``rounds`` recorded ones.

        ``control`` (default: where the workload offers one) also measures, in every round,
        the machine's own ceiling for the workload (``workload.control()``, a raw peer moving
        the same bytes), or under ``--logbench-compare-ref`` the same workload on the reference
        revision's broker, so the gate can judge the broker relative to the machine's state.
        ``residency=True`` samples the page cache of the broker's segments around each round
        (outside the timed section) for the residency plot. ``syscalls``: None counts the
        broker's syscalls per round where perf may (~0.3 s per round, outside the timed
        section), True insists, False never counts.
        """
        [result] = self._measure(
            [workload],
            [name or workload.name],
            rounds,
            warmup,
            residency,
            syscalls,
            control,
            group=None,
        )
        return result

    def compare(
        self,
        a: Workload,
        b: Workload,
        *,
        rounds: int = 7,
        warmup: int = 1,
        names: tuple[str, str] | None = None,
        residency: bool = False,
        syscalls: bool | None = None,
        control: bool | None = False,
    ) -> tuple[Result, Result]:
        """Measure two workloads interleaved, round by round (A B A B ...), so their results
        can be compared per round (``assert_faster``, ``assert_cheaper``, ``paired_ratios``)."""
        if names is None:
            names = (a.name, b.name) if a.name != b.name else (f"{a.name}-a", f"{b.name}-b")
        result_a, result_b = self._measure(
            [a, b],
            list(names),
            rounds,
            warmup,
            residency,
            syscalls,
            control,
            group=uuid.uuid4().hex[:12],
        )
        return result_a, result_b

    def _measure(
        self,
        workloads: Sequence[Workload],
        names: Sequence[str],
        rounds: int,
        warmup: int,
        residency: bool,
        syscalls: bool | None,
        control: bool | None,
        group: str | None,
    ) -> list[Result]:
        if rounds < 1 or warmup < 0:
            raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds} and {warmup}")
        controls: list[Workload | None] = []
        for workload in workloads:
            self._stack.callback(workload.close)
            workload.setup()
            controls.append(_control(workload, control, self.reference))
        for extra in controls:
            if extra is not None:
                self._stack.callback(extra.close)
                extra.setup()
        for _ in range(warmup):
            for workload, extra in zip(workloads, controls, strict=True):
                for each in (workload, extra):
                    if each is not None:
                        each.prepare()
                        each.run()
        session = _Session(
            self, workloads, names, controls, rounds, warmup, residency, syscalls, group
        )
        results = session.record(rounds)
        while self.decide is not None and any(self.decide(r) == "undecided" for r in results):
            more = session.extend()
            if more is None:
                break
            results = more
        return results


def _control(
    workload: Workload,
    wanted: bool | None,
    reference: Callable[[Workload], Workload | None] | None,
) -> Workload | None:
    """The workload's control when wanted and available: its twin on the reference
    revision's broker where there is one, else its raw-peer twin."""
    if wanted is False:
        return None
    if reference is not None and (twin := reference(workload)) is not None:
        return twin
    make = getattr(workload, "control", None)
    if make is None:
        return None
    made = make()
    if made is None and wanted:
        raise ValueError(
            f"{workload.name}: no control available for this workload "
            "(it needs a broker whose log dir is local)"
        )
    return made


def _control_traits(control: Workload | None) -> dict[str, Any]:
    """What a result's control was: the gate judges a run beside a reference revision on its
    own rounds, and one beside the raw peer against a baseline measured the same way."""
    if control is None:
        return {}
    revision = getattr(control.broker, "revision", None)
    if revision is not None:
        return {"control": {"kind": "reference", "commit": revision}}
    return {"control": {"kind": "raw peer"}}


def _sample(
    broker: Any, started: float, index: int, phase: Literal["prepared", "ran"]
) -> ResidencySample:
    from pytest_logbench import pagecache

    now = time.perf_counter() - started
    measured = pagecache.residency(broker.segment_files())
    base = Path(broker.log_dir)
    return ResidencySample(
        now, index, phase, {str(f.path.relative_to(base)): f.fraction for f in measured}
    )
