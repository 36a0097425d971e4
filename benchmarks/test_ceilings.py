"""Benchmarks: the reference broker against this machine's own ceilings, side by side.

Each benchmark measures a broker path and the same bytes moved by the bare syscalls (see
``raw_peer.py``) in interleaved rounds, and prints the ratios: MB/s (broker / raw) and sender
CPU seconds per GB (broker / raw). Run with ``pytest benchmarks -s``. They assert nothing about
speed: these machines are shared and noisy, so the figures are for reading and for baselines
(``--logbench-save`` / ``--logbench-compare``), not pass/fail.
"""

from __future__ import annotations

import os

from raw_peer import RawAppendWorkload, RawFetchWorkload
from tutorial import print_comparison

from pytest_logbench.workloads import FetchWorkload, ProduceWorkload

MIB = 1 << 20
FETCH_SIZE = 256 * MIB
PRODUCE_SIZE = 128 * MIB
ROUNDS = 5


def test_fetch_against_raw_sendfile(broker, measure, page_cache, tmp_path):
    data = tmp_path / "ceiling.bin"
    with data.open("wb") as f:
        for _ in range(FETCH_SIZE // MIB):
            f.write(os.urandom(MIB))
    page_cache.warm(data)
    a, b = measure.compare(FetchWorkload(broker, FETCH_SIZE, cache="warm"),
                           RawFetchWorkload(data, FETCH_SIZE), rounds=ROUNDS,
                           names=("broker fetch", "raw sendfile"))
    ratios = print_comparison("warm fetch: reference broker vs bare sendfile", a, b)
    print(f"The broker delivered {ratios['throughput']:.0%} of the bare sendfile rate"
          + (f" at {ratios['cpu']:.2f}x its CPU per GB." if "cpu" in ratios else "."))


def test_produce_against_raw_append(broker, measure, tmp_path):
    a, b = measure.compare(ProduceWorkload(broker, PRODUCE_SIZE),
                           RawAppendWorkload(tmp_path / "appended.bin", PRODUCE_SIZE),
                           rounds=ROUNDS, names=("broker produce", "raw append"))
    ratios = print_comparison("produce: reference broker vs bare socket-to-file appends", a, b)
    print(f"The broker appended at {ratios['throughput']:.0%} of the bare rate"
          + (f" at {ratios['cpu']:.2f}x its CPU per GB." if "cpu" in ratios else "."))
