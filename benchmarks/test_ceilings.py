"""Benchmarks: the reference broker against this machine's own ceilings, side by side.

Each benchmark measures a broker path and the same bytes moved by bare syscalls (the raw peer of
``pytest_logbench.ceiling``) in the same rounds, read by the same fast receiver (splice to
/dev/null), and prints the ratios: GB/s (broker / raw) and sender CPU seconds per GB
(broker / raw). The receiver check comes first: a ceiling read by a slow receiver is not a
ceiling. Run with ``pytest benchmarks -s``; ``LOGBENCH_SMOKE=1`` makes every benchmark small.
They assert only what the instrument must guarantee (the receiver is not the limit); the
broker's figures are for reading and for baselines, not pass/fail.
"""

from __future__ import annotations

import statistics

from bare_receiver import BareSpliceFetch
from sizes import SMOKE, scaled

from pytest_logbench.ceiling import RawAppendWorkload, RawFetchWorkload
from pytest_logbench.client import Producer
from pytest_logbench.results import Result
from pytest_logbench.tables import print_comparison
from pytest_logbench.workloads import FetchWorkload

MIB = 1 << 20
FETCH_SIZE = scaled(512 * MIB, 32 * MIB)
PRODUCE_SIZE = scaled(128 * MIB, 16 * MIB)
ROUNDS = scaled(7, 3)


def _ceiling_line(what: str, result: Result) -> str:
    """'the broker delivered X of the raw rate at Y its CPU per GB', from the same rounds."""
    relative = statistics.median(result.values("relative"))
    text = f"{what}: {relative:.0%} of the bare rate"
    if result.values("relative_cpu"):
        text += f" at {statistics.median(result.values('relative_cpu')):.2f}x its CPU per GB"
    return text + f" (median of {len(result.rounds)} rounds, each beside its own ceiling)"


def test_the_harness_consumer_is_not_the_limit(broker, measure):
    """The harness consumer against the barest splice loop, on the same zero-copy broker in
    interleaved rounds: the instrument must read at >= 0.85x the bare loop's rate."""
    topic = "receiver-check"
    Producer(broker.bootstrap).produce(topic, FETCH_SIZE)
    harness, bare = measure.compare(
        FetchWorkload(broker, FETCH_SIZE, topic=topic),
        BareSpliceFetch(broker, topic),
        rounds=ROUNDS,
        names=("harness consumer", "bare splice loop"),
        syscalls=False,
    )
    ratios = print_comparison(
        "receiver check: zero-copy broker, warm", harness, bare, metrics=("throughput",)
    )
    print(
        f"The harness consumer read at {ratios['throughput']:.2f}x the bare splice loop's "
        "rate (target >= 0.85)."
    )
    # The target, on the median of the per-round ratios (interleaved rounds); a smoke run's
    # three small rounds mean nothing.
    assert SMOKE or ratios["throughput"] >= 0.85, (
        f"the harness consumer is the bottleneck: {ratios['throughput']:.2f}x the bare loop"
    )


def test_fetch_against_raw_sendfile_and_raw_copy(broker_factory, measure):
    zero_copy, copy = broker_factory(), broker_factory(copy=True)
    zc = measure(
        FetchWorkload(zero_copy, FETCH_SIZE), rounds=ROUNDS, control=True, name="broker zero-copy"
    )
    print(f"\n--- warm fetch, {FETCH_SIZE // MIB} MiB per round, fast receiver ---")
    print(zc.describe(), zc.describe("relative"), sep="\n")
    print(_ceiling_line("zero-copy fetch vs bare sendfile", zc))
    cp, raw_copy = measure.compare(
        FetchWorkload(copy, FETCH_SIZE),
        RawFetchWorkload(None, FETCH_SIZE, near=copy.log_dir.parent, mode="copy"),
        rounds=ROUNDS,
        names=("broker copy path", "raw pread+send"),
    )
    ratios = print_comparison("copy path vs bare pread + send", cp, raw_copy)
    print(
        f"copy-path fetch vs bare pread+send: {ratios['throughput']:.0%} of the bare rate"
        + (f" at {ratios['cpu']:.2f}x its CPU per GB" if "cpu" in ratios else "")
    )
    zc_rate, cp_rate = zc.mb_per_s.median, cp.mb_per_s.median
    print(
        f"zero-copy {zc_rate:,.0f} MB/s vs copy path {cp_rate:,.0f} MB/s: "
        f"{zc_rate / cp_rate:.2f}x (separate rounds; the tutorial interleaves them)"
    )


def test_raw_peers_alone(measure, tmp_path):
    """The two ceilings against each other: bare sendfile vs bare pread + send, interleaved."""
    a, b = measure.compare(
        RawFetchWorkload(None, FETCH_SIZE, near=tmp_path),
        RawFetchWorkload(None, FETCH_SIZE, near=tmp_path, mode="copy"),
        rounds=ROUNDS,
        names=("raw sendfile", "raw pread+send"),
    )
    print_comparison("the machine: bare sendfile vs bare pread + send", a, b)
    append = measure(RawAppendWorkload(None, PRODUCE_SIZE, near=tmp_path), rounds=ROUNDS)
    print(append.describe(), append.describe("cpu"), sep="\n")
