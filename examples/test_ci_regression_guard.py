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
broker whose fetches are 4x slower (``--logbench-fetch-slowdown=4``: a regression injected
into the brokers under test, the way one would arrive in a pull request), and prints each
session's verdict.

The second part runs the gate beside the last commit's broker (``--logbench-compare-ref=HEAD``:
that broker runs the same workload in every round) with every core kept busy: the load that a
comparison with a baseline saved on a calm machine cannot tell from a regression.

Asserted: the slowed broker fails the gate, in both parts. How often the gate catches smaller
slowdowns and how often it flags an unchanged broker is measured by ``benchmarks/test_gate.py``
(targets: 1.5x and 2x caught in >= 19 of 20 runs, unchanged flagged in <= 1 of 20); 4x and 3x
keep this tutorial's verdicts clear of the noise of a shared machine. The unchanged sessions'
verdicts are printed, not asserted: a false alarm is allowed 1 time in 20.
"""

from __future__ import annotations

import pytest

from pytest_logbench.contention import busy_cores

pytest_plugins = ["pytester"]

BENCHMARK = """
from pytest_logbench.workloads import FetchWorkload


def test_fetch(broker, measure):
    measure(FetchWorkload(broker, "64 MiB"))
"""

QUIET = ("-p", "no:cacheprovider", "-q")
FAIL = "--logbench-compare-fail=throughput:10%"


def _report(title: str, sessions: dict[str, pytest.RunResult]) -> None:
    """Each session's exit code and logbench's line for the benchmark (its verdict, if any)."""
    print(f"\n--- the CI gate: {title} ---")
    print(f"{'session':<26} {'exit':>5}  verdict")
    for name, result in sessions.items():
        lines = [
            line
            for line in result.outlines
            if line.startswith("REGRESSION")
            or (line.startswith("test_bench") and "throughput" in line)
        ]
        verdict = " ".join(lines[-1].split()) if lines else "(no result line)"
        print(f"{name:<26} {int(result.ret):>5}  {verdict}")
    if sessions["unchanged broker"].ret != pytest.ExitCode.OK:
        print(
            "The unchanged broker was flagged: a false alarm, which the gate allows in at most "
            "1 of 20 runs (benchmarks/test_gate.py measures the rate)."
        )


@pytest.mark.slow
def test_the_gate_catches_an_injected_slowdown(pytester):
    pytester.makepyfile(test_bench=BENCHMARK)
    saved = pytester.runpytest(*QUIET, "--logbench-save", "main")
    assert saved.ret == pytest.ExitCode.OK, saved.stdout.str()
    gate = (*QUIET, "--logbench-compare=main", FAIL)
    unchanged = pytester.runpytest(*gate)
    slowed = pytester.runpytest(*gate, "--logbench-fetch-slowdown=4")

    _report(
        f"{FAIL} against a saved baseline",
        {
            "save baseline 'main'": saved,
            "unchanged broker": unchanged,
            "fetches 4x slower": slowed,
        },
    )
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED, slowed.stdout.str()
    slowed.stdout.fnmatch_lines(["*REGRESSION test_bench.py::test_fetch*throughput -*"])


@pytest.mark.slow
def test_beside_the_last_commit_a_busy_machine_cannot_fool_the_gate(pytester):
    """A saved baseline would compare this busy moment with a calm one; beside the last
    commit's broker both brokers of a round share the load, so the round's ratio measures the
    code."""
    from pytest_logbench.revisions import RevisionError, broker_code

    try:
        head = broker_code("HEAD").commit
    except RevisionError as exc:
        pytest.skip(f"needs logbench from a git checkout: {exc}")
    pytester.makepyfile(test_bench=BENCHMARK)
    gate = (*QUIET, "--logbench-compare-ref=HEAD", FAIL)
    with busy_cores():
        unchanged = pytester.runpytest(*gate)
        slowed = pytester.runpytest(*gate, "--logbench-fetch-slowdown=3")

    _report(
        f"{FAIL} beside the broker of {head[:12]}, every core busy",
        {"unchanged broker": unchanged, "fetches 3x slower": slowed},
    )
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED, slowed.stdout.str()
    slowed.stdout.fnmatch_lines([f"*REGRESSION*throughput -*vs the broker of {head[:12]}*"])
