"""Tutorial: the CI regression guard — save a baseline, inject a slowdown, watch the gate fail.

The seed's claims are only worth keeping if a change that breaks them is caught. logbench's
gate does that in CI: one run saves a baseline (``--logbench-save main``), every later run
compares its measurements with it (``--logbench-compare=main
--logbench-compare-fail=throughput:10%``) and fails the test whose throughput regressed by more
than 10 %, with 99 % confidence per verdict (Mann-Whitney bounds of the round ratios; rounds are
added while the verdict is undecided, and a slowdown of the whole machine is excused by the
control measured beside each round: docs/architecture.md, "The gate").

This tutorial runs the gate as a CI job would, on a tiny project of its own: a fetch benchmark
of 64 MiB from the reference broker. It saves a baseline, compares an unchanged broker, then a
broker slowed down 4x by ``--fetch-slowdown`` (injected through the documented launcher hook,
the way a regression would arrive in a pull request), and prints each session's verdict.

The second part runs the gate beside the last commit's broker (``--logbench-compare-ref=HEAD``)
with every core kept busy: the load the saved-baseline gate cannot tell from a regression.

Asserted: the slowed broker fails the gate. How often the gate catches smaller slowdowns and
how often it flags an unchanged broker is measured by ``benchmarks/test_gate.py`` (targets: 2x
caught in >= 19 of 20 runs, unchanged flagged in <= 1 of 20); a 4x slowdown keeps this
tutorial's verdict clear of the noise of a shared machine (measured here: -79 %, 99 % bounds
-86 % to -69 %, with the load average at 6 on 2 cores). The unchanged session's verdict is
printed, not asserted: a false alarm is allowed 1 time in 20.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest_plugins = ["pytester"]

BENCHMARK = """
from pytest_logbench.workloads import FetchWorkload


def test_fetch(broker, measure):
    measure(FetchWorkload(broker, "64 MiB"))
"""

# A pull request that makes fetches twice as slow, arriving through the launcher hook.
SLOWED_BROKER = """
import os

from pytest_logbench.brokers import ReferenceBroker


def pytest_logbench_launch_broker(log_dir, options, work_dir):
    factor = float(os.environ.get("SLOWDOWN", "1"))
    return ReferenceBroker(
        log_dir, options.with_(fetch_slowdown=factor if factor > 1 else None), work_dir=work_dir
    )
"""

GATE = ("--logbench-compare=main", "--logbench-compare-fail=throughput:10%")


def _verdict(result: pytest.RunResult) -> str:
    """The session's line for the benchmark in logbench's summary (its verdict, if any)."""
    lines = [
        line
        for line in result.outlines
        if line.startswith("REGRESSION") or (line.startswith("test_bench") and "throughput" in line)
    ]
    return " ".join(lines[-1].split()) if lines else "(no result line)"


@pytest.mark.slow
def test_the_gate_catches_an_injected_slowdown(pytester, monkeypatch):
    pytester.makeconftest(SLOWED_BROKER)
    pytester.makepyfile(test_bench=BENCHMARK)
    quiet = ("-p", "no:cacheprovider", "-q")

    saved = pytester.runpytest(*quiet, "--logbench-save", "main")
    assert saved.ret == pytest.ExitCode.OK, saved.stdout.str()

    unchanged = pytester.runpytest(*quiet, *GATE)
    monkeypatch.setenv("SLOWDOWN", "4")
    slowed = pytester.runpytest(*quiet, *GATE)

    print("\n--- the CI gate: --logbench-compare-fail=throughput:10% against a saved baseline ---")
    print(f"{'session':<26} {'exit':>5}  verdict")
    for name, result in (
        ("save baseline 'main'", saved),
        ("unchanged broker", unchanged),
        ("fetches 4x slower", slowed),
    ):
        print(f"{name:<26} {int(result.ret):>5}  {_verdict(result)}")
    if unchanged.ret != pytest.ExitCode.OK:
        print(
            "The unchanged broker was flagged: a false alarm, which the gate allows in at most "
            "1 of 20 runs (benchmarks/test_gate.py measures the rate)."
        )
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED, slowed.stdout.str()
    slowed.stdout.fnmatch_lines(["*REGRESSION test_bench.py::test_fetch*throughput -*"])


@pytest.mark.slow
def test_beside_the_last_commit_a_busy_machine_cannot_fool_the_gate(pytester, monkeypatch):
    """The same gate with ``--logbench-compare-ref=HEAD``: the reference broker of the last
    commit runs beside the one under test in every round, while a process spins on every core
    (a CI runner shared with other jobs). A saved baseline would compare this busy moment with
    a calm one; here both brokers of a round share the load, so the round's ratio measures the
    code. Asserted: fetches 3x slower fail; the unchanged broker's verdict is printed."""
    from pytest_logbench.revisions import RevisionError, broker_code

    try:
        head = broker_code("HEAD").commit
    except RevisionError as exc:
        pytest.skip(f"needs logbench from a git checkout: {exc}")
    pytester.makeconftest(SLOWED_BROKER)
    pytester.makepyfile(test_bench=BENCHMARK)
    gate = ("-p", "no:cacheprovider", "-q", "--logbench-compare-ref=HEAD", GATE[1])
    with _busy_cores():
        unchanged = pytester.runpytest(*gate)
        monkeypatch.setenv("SLOWDOWN", "3")
        slowed = pytester.runpytest(*gate)

    print(
        f"\n--- the CI gate beside the broker of {head[:12]}, every core busy: "
        "--logbench-compare-fail=throughput:10% ---"
    )
    print(f"{'session':<26} {'exit':>5}  verdict")
    for name, result in (("unchanged broker", unchanged), ("fetches 3x slower", slowed)):
        print(f"{name:<26} {int(result.ret):>5}  {_verdict(result)}")
    if unchanged.ret != pytest.ExitCode.OK:
        print(
            "The unchanged broker was flagged: a false alarm, which the gate allows in at most "
            "1 of 20 runs (benchmarks/test_gate.py measures the rate under the same load)."
        )
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED, slowed.stdout.str()
    slowed.stdout.fnmatch_lines([f"*REGRESSION*throughput -*vs the broker of {head[:12]}*"])


@contextmanager
def _busy_cores() -> Iterator[None]:
    """One process spinning per core while the block runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
