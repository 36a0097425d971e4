"""Latency percentiles (latency.py): known inputs, merging across processes, the metrics of
``Result``, and the gate on ``latency_p99`` decided on recorded rounds (no timing here, except
in the tests that drive a real broker, which assert counts, not durations)."""

from __future__ import annotations

import itertools
import json
import pickle

import pytest

from pytest_logbench.backlog import BacklogDrainWorkload
from pytest_logbench.baselines import Threshold, compare, parse_threshold
from pytest_logbench.client import HarnessClient
from pytest_logbench.end_to_end import STAMP, EndToEndLatencyWorkload
from pytest_logbench.latency import Latency, LatencySummary, Pacer
from pytest_logbench.report import SessionReport
from pytest_logbench.results import METRICS, Result, Round
from pytest_logbench.workloads import FetchWorkload, ProduceWorkload
from reference_broker.record_codec import iter_records

pytest_plugins = ["pytester"]


def _latency(microseconds) -> Latency:
    latency = Latency()
    for value in microseconds:
        latency.record_us(value)
    return latency


def test_percentiles_of_known_inputs():
    # Below 2,048 us every value has a bucket of its own: the percentiles are exact.
    summary = _latency(range(1, 1001)).summary()
    assert summary == LatencySummary(p50=0.5, p99=0.99, p999=0.999, max=1.0, count=1000)
    # One slow request in 1,000 moves the max and the p99.9 bucket, not the p99.
    tail = _latency([100] * 999 + [1500]).summary()
    assert (tail.p50, tail.p99, tail.p999, tail.max) == (0.1, 0.1, 0.1, 1.5)
    tail = _latency([100] * 998 + [1500] * 2).summary()
    assert (tail.p99, tail.p999) == (0.1, 1.5)


def test_large_values_keep_three_significant_digits_and_the_range_is_bounded():
    summary = _latency([250_000] * 10).summary()  # 250 ms
    assert summary.p50 == pytest.approx(250, rel=1e-3)
    assert _latency([10**12]).summary().max == pytest.approx(600_000, rel=1e-3)  # 10 minutes
    with pytest.raises(ValueError, match="no latency"):
        Latency().summary()


def test_histograms_merge_across_processes_exactly():
    low, high = _latency(range(1, 501)), _latency(range(501, 1001))
    carried = [pickle.loads(pickle.dumps(part)) for part in (low, high)]  # as members return
    merged = Latency.merge([carried[0], None, carried[1]])
    assert merged is not None
    assert merged.summary() == _latency(range(1, 1001)).summary()
    assert Latency.merge([None]) is None
    assert Latency.decode(low.encode()).summary() == low.summary()


def test_pacer_hands_out_intended_times_even_when_behind():
    pacer = Pacer(rate=1e9)  # one per nanosecond: always behind, never sleeps
    times = [pacer.next() for _ in range(5)]
    assert times == [pacer.start_ns + i for i in range(5)]
    with pytest.raises(ValueError, match="rate"):
        Pacer(0)


# --- metrics of a result ---------------------------------------------------------------------


def _rounds(p99s_us, n=100):
    """One round per entry of ``p99s_us``: ``n - 2`` requests of 100 us and two of the entry,
    so that the round's p99 (and max) is exactly that entry."""
    rounds = []
    for p99 in p99s_us:
        values = [100] * (n - 2) + [p99] * 2
        rounds.append(
            Round(bytes=10**8, records=10, seconds=1.0, latency=_latency(values).encode())
        )
    return tuple(rounds)


def test_latency_metrics_of_rounds_and_results():
    result = Result("produce", _rounds([1000, 1200, 1100]), nodeid="t.py::test")
    assert result.values("latency_p99") == [1.0, 1.2, 1.1]
    assert result.values("latency_p50") == [0.1, 0.1, 0.1]
    assert result.values("latency_max") == [1.0, 1.2, 1.1]
    assert "median 1.10 ms" in result.describe("latency_p99")
    assert result.latency().count == 300 and result.latency().max == 1.2
    data = result.to_dict()
    assert data["stats"]["latency_p99"]["median"] == 1.1
    assert Result.from_dict(data) == result
    assert not METRICS["latency_p99"].higher_is_better
    bare = Result("raw", (Round(bytes=1, records=1, seconds=1.0),))
    with pytest.raises(ValueError, match="records no latency"):
        bare.stats("latency_p99")


def test_the_terminal_report_shows_p99_latency(tmp_path):
    report = SessionReport(tmp_path, tmp_path)
    report.add(Result("produce", _rounds([1000, 1200, 1100]), nodeid="t.py::test"))
    [row] = [line for line in report.lines() if "latency_p99" in line]
    assert "1.10 ms" in row


# --- the gate on latency_p99 -----------------------------------------------------------------


def test_parse_latency_threshold():
    assert parse_threshold("latency_p99:20%") == Threshold("latency_p99", 0.20)
    assert parse_threshold("latency_p999:5%") == Threshold("latency_p999", 0.05)


BASELINE = [1000, 1040, 980, 1010, 1020, 990, 1005, 1030]


def _gate(current_p99s, looks=1):
    baseline = Result("produce", _rounds(BASELINE), nodeid="t.py::test")
    current = Result("produce", _rounds(current_p99s), nodeid="t.py::test", looks=looks)
    [change] = [
        c
        for c in compare([current], {baseline.key: baseline}, [Threshold("latency_p99", 0.2)])
        if c.metric == "latency_p99"
    ]
    return change


def test_gate_flags_a_higher_p99_and_never_a_lower_one():
    slower = _gate([1500, 1560, 1480, 1510, 1530, 1490, 1505, 1540])
    assert slower.regressed and slower.verdict == "regressed" and slower.basis == "latency_p99"
    assert "REGRESSION beyond latency_p99:20%" in slower.describe()
    faster = _gate([500, 520, 490, 505, 515, 495, 502, 510])  # latency halved: better
    assert not faster.regressed and faster.verdict == "ok"
    same = _gate([1010, 990, 1025, 1000, 1015, 985, 1000, 1020])
    assert not same.regressed and same.verdict == "ok"
    one_slow_best_fast = _gate([1500, 1560, 1480, 1510, 1530, 1490, 1505, 1000])
    assert not one_slow_best_fast.regressed  # the best round kept the old p99


def test_gate_on_latency_spends_its_confidence_over_the_looks(tmp_path):
    # Three rounds 50 % slower: enough at 99 % for a single look, not for one of 25 looks.
    slower = [1500, 1560, 1480]
    assert _gate(slower, looks=1).regressed
    undecided = _gate(slower, looks=25)
    assert not undecided.regressed and undecided.verdict == "undecided"
    report = SessionReport(tmp_path, tmp_path, thresholds=(Threshold("latency_p99", 0.2),))
    report.baseline = {
        "t.py::test (produce)": Result("produce", _rounds(BASELINE), nodeid="t.py::test")
    }
    current = Result("produce", _rounds(slower), nodeid="t.py::test", looks=25)
    assert report.decide(current) == "undecided"  # the Meter records more rounds
    current = Result("produce", _rounds(slower * 3), nodeid="t.py::test", looks=25)
    assert report.decide(current) == "regressed"


# --- a real broker: every request is recorded ------------------------------------------------


def test_produce_and_fleet_workloads_record_every_request(broker):
    produce = ProduceWorkload(broker, "2 MiB", batch_bytes=256 << 10)
    fleet = FetchWorkload(broker, "2 MiB", cache="as-is", consumers=2, max_bytes=512 << 10)
    try:
        for workload in (produce, fleet):
            workload.setup()
            transfer = workload.run()
            assert transfer.latency is not None
            assert transfer.latency.count == transfer.requests  # both members' fetches
            assert transfer.latency.summary().max > 0
    finally:
        produce.close()
        fleet.close()


# --- end-to-end latency ----------------------------------------------------------------------


def test_end_to_end_latency_from_the_intended_send_time(broker, measure):
    workload = EndToEndLatencyWorkload(broker, rate=500, record_bytes=100, seconds=0.5)
    result = measure(workload, rounds=2, warmup=0, syscalls=False)
    for round_ in result.rounds:
        assert round_.records == 250 and round_.bytes == 250 * 100  # every record, once
        latency = Latency.decode(round_.latency)
        assert latency.count == 250  # one end-to-end latency per consumed record
        assert latency.summary().p50 > 0
    assert result.values("latency_p99") and result.workload["kind"] == "end-to-end"


@pytest.mark.parametrize("batch_records", [1, 10])
def test_records_carry_their_intended_send_times_even_when_sent_late(broker, batch_records):
    """Coordinated omission: a producer that cannot keep its schedule (here, a rate far beyond
    one request at a time) still stamps each record with the time it was *meant* to be sent,
    so every record a stall delayed shows the delay. The stamps in the log are the schedule:
    exactly one interval apart, however late each was sent, and however they were batched."""
    workload = EndToEndLatencyWorkload(
        broker, rate=1e6, record_bytes=100, seconds=2e-4, batch_records=batch_records
    )
    try:
        workload.setup()
        transfer = workload.run()
        with HarnessClient(broker.bootstrap) as client:
            fetched = client.fetch(workload.topic, 0, 0)
    finally:
        workload.close()
    assert transfer.records == 200 and transfer.latency.count == 200
    stamps = [
        STAMP.unpack_from(record.value)[0]
        for at, _ in fetched.batches()
        for record in iter_records(fetched.records[at:])
    ]
    assert len(stamps) == 200
    assert {b - a for a, b in itertools.pairwise(stamps)} == {1000}  # 1e6/s: 1,000 ns apart


# --- backlog drain ---------------------------------------------------------------------------


def test_backlog_drain_reads_the_backlog_and_what_arrived_meanwhile(broker, measure):
    workload = BacklogDrainWorkload(broker, backlog="2 MiB", rate="8 MB/s", record_bytes=1024)
    result = measure(workload, rounds=2, warmup=0, syscalls=False)
    backlog_records = (2 << 20) // 1024
    with HarnessClient(broker.bootstrap) as client:
        end, _ = client.list_offset(workload.topic, 0, -1)
    for round_ in result.rounds:
        assert round_.records >= backlog_records  # the whole backlog was drained
        assert round_.bytes > backlog_records * 1024
        assert round_.latency is not None  # the producer's acks while the drain ran
    assert "s (min" in result.describe("seconds")  # the drain times
    # The producer stopped once the consumer caught up: per round, what was left unread is
    # at most the slack (one request) and the request that was under way.
    assert end - sum(r.records for r in result.rounds) <= 2 * 2 * workload.batch_records


# --- the gate through pytest, as a CI job runs it --------------------------------------------

SCRIPTED = """
from pytest_logbench.client import Transfer
from pytest_logbench.latency import Latency

class Requests:
    '''Each run records 100 requests of 1 to 1.1 ms (varying by run) times --factor: a
    stand-in for a broker whose latency we control, with no timing at all.'''
    name = "requests"
    def __init__(self, factor):
        self.broker, self.factor, self.runs = object(), factor, 0
    def describe(self):
        return {"kind": "requests", "factor": self.factor}
    def setup(self): pass
    def prepare(self): pass
    def close(self): pass
    def run(self):
        self.runs += 1
        latency = Latency()
        for i in range(100):
            latency.record_us((1000 + i + 7 * (self.runs % 13)) * self.factor)
        return Transfer(bytes=10**6, records=100, batches=1, requests=100, seconds=0,
                        latency=latency)

def test_requests(measure, request):
    measure(Requests(request.config.getoption("factor")), rounds=5, warmup=0, syscalls=False)
"""

CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--factor", type=float, default=1.0)
"""


def test_the_gate_fails_a_higher_p99_latency_and_only_then(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_scripted=SCRIPTED)
    assert pytester.runpytest("-p", "no:cacheprovider", "--logbench-save", "base").ret == 0
    gate = ["-p", "no:cacheprovider", "--logbench-compare=base"]
    gate.append("--logbench-compare-fail=latency_p99:20%")
    slower = pytester.runpytest(*gate, "--factor", "1.5", "--logbench-json", "gate.json")
    assert slower.ret == pytest.ExitCode.TESTS_FAILED
    slower.stdout.fnmatch_lines(
        [
            "*REGRESSION test_scripted.py::test_requests (requests): latency_p99 +*% "
            "* REGRESSION beyond latency_p99:20%*"
        ]
    )
    [verdict] = [
        v
        for v in json.loads((pytester.path / "gate.json").read_text())["verdicts"]
        if v["metric"] == "latency_p99"
    ]
    assert verdict["regressed"] and verdict["unit"] == "ms" and verdict["lower"] > 0.2
    for factor in ("1", "0.5"):  # unchanged, and faster: neither is a regression
        passed = pytester.runpytest(*gate, "--factor", factor)
        assert passed.ret == pytest.ExitCode.OK, passed.stdout.str()
        assert "REGRESSION" not in passed.stdout.str()


def test_a_baseline_saved_before_latency_was_measured_does_not_hold_the_gate_open():
    old = Result("produce", (Round(bytes=10**8, records=10, seconds=1.0),) * 5, nodeid="t.py::t")
    current = Result("produce", _rounds([1000] * 5), nodeid="t.py::t", looks=5)
    changes = compare([current], {old.key: old}, [Threshold("latency_p99", 0.2)])
    [change] = [c for c in changes if c.metric == "latency_p99"]
    assert change.describe() == "baseline has no latency_p99"
    assert change.verdict == "ok"  # more rounds could never decide: no extension
