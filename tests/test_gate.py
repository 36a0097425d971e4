"""The CI gate's verdicts on recorded rounds (no timing), and the reference revision it can run
beside: its code taken from git, its broker started from that code, its verdict in a session."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from dataclasses import replace

import psutil
import pytest

import reference_broker
from pytest_logbench.baselines import PAIRED, Threshold, compare, paired_change
from pytest_logbench.brokers import BrokerOptions, ReferenceBroker
from pytest_logbench.measure import Meter
from pytest_logbench.results import Result, Round
from pytest_logbench.revisions import ReferenceTwins, RevisionError, broker_code
from pytest_logbench.stats import InsufficientRounds, _signed_rank_counts, paired_ratio_bounds
from pytest_logbench.workloads import FetchWorkload

pytest_plugins = ["pytester"]

GATE = [Threshold("throughput", 0.10)]

# --- the bounds of paired rounds -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 7, 10])
def test_signed_rank_counts_match_enumeration(n):
    expected = [0] * (n * (n + 1) // 2 + 1)
    for signs in range(2**n):
        expected[sum(rank for rank in range(1, n + 1) if signs >> (rank - 1) & 1)] += 1
    assert _signed_rank_counts(n) == expected


def test_paired_bounds_centre_on_symmetric_rounds_and_need_enough_of_them():
    spread = [0.02, 0.05, 0.1, 0.2, 0.3]
    rounds = [0.8 * math.exp(s) for s in spread] + [0.8 * math.exp(-s) for s in spread]
    bounds = paired_ratio_bounds(rounds, 0.99)
    assert bounds.estimate == pytest.approx(0.8)
    assert bounds.lower < 0.8 < bounds.upper < 1
    # Seven rounds are the fewest whose extreme can bound at 99 %: 1 / 2^7 < 1 %.
    seven = paired_ratio_bounds(rounds[:7], 0.99)
    assert (seven.lower, seven.upper) == pytest.approx((min(rounds[:7]), max(rounds[:7])))
    with pytest.raises(InsufficientRounds, match="at least 7 rounds"):
        paired_ratio_bounds(rounds[:6], 0.99)
    with pytest.raises(InsufficientRounds, match="moved nothing"):
        paired_ratio_bounds([*rounds, 0.0], 0.99)


def test_paired_bounds_keep_their_confidence_and_beat_the_sign_test():
    """On rounds with no real difference a 95 % bound is wrong in about 5 % of the cases or
    fewer; on a real 20 % slowdown it excludes 1 far more often than the sign test could."""
    rng = random.Random(20261130)
    trials, misses, caught = 2000, 0, 0
    for _ in range(trials):
        same = [rng.lognormvariate(0, 0.2) for _ in range(10)]
        misses += paired_ratio_bounds(same, 0.95).upper < 1.0
        slower = [0.8 * rng.lognormvariate(0, 0.2) for _ in range(10)]
        caught += paired_ratio_bounds(slower, 0.95).upper < 1.0
    assert misses / trials <= 0.05 + 0.015
    # The sign test's 95 % upper bound of 10 rounds is their 2nd largest: below 1 only when
    # at most one round is above 1 (P = 11 / 1024 per run at 20 % and sigma 0.2: ~0.17).
    assert caught / trials > 0.5


# --- verdicts on recorded rounds -------------------------------------------------------------


def _beside(ratios, control, looks=1, cpu_ratios=None):
    """A result whose rounds ran at ``ratios`` of their control's throughput."""
    rounds = tuple(
        Round(
            bytes=10**8,
            records=1,
            seconds=1.0,
            cpu_seconds=0.1,
            control_bytes=10**8,
            control_seconds=r,
            control_cpu_seconds=0.1 / (cpu_ratios[i] if cpu_ratios else 1.0),
        )
        for i, r in enumerate(ratios)
    )
    return Result("fetch-warm", rounds, {"kind": "fetch", "control": control}, looks=looks)


REFERENCE = {"kind": "reference", "commit": "a" * 40}


def test_beside_a_reference_the_rounds_alone_decide():
    rng = random.Random(7)
    noisy = [rng.lognormvariate(0, 0.15) for _ in range(10)]
    slower = paired_change(_beside([0.66 * r for r in noisy], REFERENCE), "throughput", GATE[0])
    assert slower is not None and slower.regressed and slower.verdict == "regressed"
    assert slower.basis == "relative" and slower.reference == "a" * 40
    assert slower.baseline is None  # no saved figures needed
    same = paired_change(_beside([0.99, 1.01] * 5, REFERENCE), "throughput", GATE[0])
    assert same is not None and not same.regressed and same.verdict == "ok"
    unsure = paired_change(_beside(noisy, REFERENCE), "throughput", GATE[0])
    assert unsure is not None and unsure.verdict == "undecided"  # spread too wide: more rounds
    few = paired_change(_beside([0.5] * 5, REFERENCE), "throughput", GATE[0])
    assert few is not None and few.verdict == "undecided" and "at least 7" in few.note
    # The strict bound of an extended measurement spends the confidence over its looks.
    edge = [0.85, 0.86, 0.87, 0.8, 0.95, 0.84, 0.88, 0.83, 0.82, 0.86]
    assert paired_change(_beside(edge, REFERENCE), "throughput", GATE[0]).regressed
    assert not paired_change(_beside(edge, REFERENCE, looks=5), "throughput", GATE[0]).regressed


def test_a_reference_judges_cpu_per_gb_by_its_round_ratios_too():
    dearer = _beside([1.0] * 10, REFERENCE, cpu_ratios=[1.5, 1.45, 1.55] * 3 + [1.5])
    [throughput, cpu] = compare([dearer], {}, [*GATE, Threshold("cpu", 0.10)])
    assert throughput.verdict == "ok" and cpu.basis == PAIRED["cpu"] and cpu.regressed


def test_beside_the_raw_peer_a_baseline_decides_and_the_control_only_excuses():
    raw = {"kind": "raw peer"}
    baseline = _beside([1.0, 1.02, 0.98] * 5, raw)
    assert paired_change(baseline, "throughput", GATE[0]) is None
    # Everything halved, broker and raw peer alike: a busy machine, excused.
    [change] = compare([_halved(baseline, control_seconds=2.0)], {baseline.key: baseline}, GATE)
    assert change.control is not None and not change.regressed
    # The broker halved, the raw peer not: regressed.
    [change] = compare([_halved(baseline, control_seconds=1.0)], {baseline.key: baseline}, GATE)
    assert change.regressed and change.reference is None


def _halved(result, control_seconds):
    """Ten of ``result``'s rounds at half the throughput, their control taking
    ``control_seconds``."""
    rounds = tuple(
        replace(r, seconds=r.seconds * 2, control_seconds=control_seconds)
        for r in result.rounds[:10]
    )
    return Result(result.name, rounds, result.workload)


# --- the revision's code and broker ----------------------------------------------------------


@pytest.fixture
def scratch_repository(tmp_path, monkeypatch):
    """A git repository whose one commit holds the installed reference broker, changed to
    say so on stderr at start."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repository = tmp_path / "repository"
    package = repository / "reference_broker"
    shutil.copytree(
        reference_broker.__path__[0], package, ignore=shutil.ignore_patterns("__pycache__")
    )
    init = package / "__init__.py"  # says so as the broker starts
    init.write_text(
        f"{init.read_text()}\nprint('scratch revision', file=__import__('sys').stderr)\n"
    )

    def git(*args):
        subprocess.run(
            ["git", "-C", str(repository), *args], check=True, capture_output=True, text=True
        )

    git("init", "-q")
    git("add", "reference_broker")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "scratch")
    return repository


def test_a_revisions_broker_runs_that_revisions_code(scratch_repository, tmp_path):
    code = broker_code("HEAD", scratch_repository)
    assert len(code.commit) == 40 and (code.directory / "reference_broker").is_dir()
    assert code.directory.is_relative_to(tmp_path / "cache" / "logbench" / "revisions")
    assert broker_code(code.commit[:10], scratch_repository) == code  # extracted once
    broker = ReferenceBroker(tmp_path / "log", code=code.directory, revision=code.commit)
    try:
        broker.start()
        assert "scratch revision" in broker.stderr_tail()
        assert psutil.Process(broker.pid).cwd() == str(code.directory)
    finally:
        broker.stop()
    plain = ReferenceBroker(tmp_path / "plain")
    try:
        plain.start()
        assert "scratch revision" not in plain.stderr_tail()
    finally:
        plain.stop()


def test_revisions_that_cannot_run_are_named(scratch_repository, tmp_path):
    with pytest.raises(RevisionError, match="'no-such-branch' is not a commit"):
        broker_code("no-such-branch", scratch_repository)
    (tmp_path / "plain").mkdir()
    with pytest.raises(RevisionError, match="is not a git checkout"):
        broker_code("HEAD", tmp_path / "plain")
    subprocess.run(
        ["git", "-C", str(scratch_repository), "rm", "-rq", "reference_broker"], check=True
    )
    subprocess.run(
        [
            *("git", "-C", str(scratch_repository), "-c", "user.name=t", "-c", "user.email=t@t"),
            *("commit", "-qm", "no broker"),
        ],
        check=True,
    )
    with pytest.raises(RevisionError, match="has no reference_broker/"):
        broker_code("HEAD", scratch_repository)


def test_twins_share_a_broker_per_options_and_skip_what_they_cannot_pair(
    scratch_repository, tmp_path
):
    twins = ReferenceTwins(broker_code("HEAD", scratch_repository), tmp_path / "twins")
    asked = BrokerOptions().with_(segment_bytes=1 << 20)
    ours = ReferenceBroker(tmp_path / "ours", asked.with_(fetch_slowdown=3.0))
    stranger = ReferenceBroker(tmp_path / "stranger")
    try:
        twins.launched(ours, asked)
        first = twins.twin(FetchWorkload(ours, "1 MiB"))
        second = twins.twin(FetchWorkload(ours, "2 MiB", cache="cold"))
        assert first is not None and second is not None and first.broker is second.broker
        twin_broker = first.broker
        # The options the test asked for, not those a launch hook added (the slowdown).
        assert twin_broker.options == asked and twin_broker.revision == twins.commit
        assert (second.size, second.cache) == (2 << 20, "cold")
        assert twins.twin(FetchWorkload(stranger, "1 MiB")) is None  # not launched here
        twins.launched(stranger, BrokerOptions(memory_limit_bytes=1 << 30))
        assert twins.twin(FetchWorkload(stranger, "1 MiB")) is None  # a budget is not shared
    finally:
        twins.close()
    assert not twin_broker.running


def test_a_fleet_runs_whole_rounds_beside_its_twin(scratch_repository, tmp_path):
    twins = ReferenceTwins(broker_code("HEAD", scratch_repository), tmp_path / "twins")
    ours = ReferenceBroker(tmp_path / "ours").start()
    meter = Meter(reference=twins.twin)
    try:
        twins.launched(ours, BrokerOptions())
        result = meter(FetchWorkload(ours, "2 MiB", consumers=2), rounds=2, warmup=0)
    finally:
        meter.close()
        twins.close()
        ours.stop()
    assert result.workload["control"] == {"kind": "reference", "commit": twins.commit}
    assert all(r.control_bytes == r.bytes > 2 << 20 for r in result.rounds)  # both members


# --- in a session ----------------------------------------------------------------------------

GATED = """
from pytest_logbench.workloads import FetchWorkload


def test_fetch(broker, measure):
    measure(FetchWorkload(broker, "16 MiB"))
"""


@pytest.mark.slow
def test_the_gate_beside_a_revision_fails_a_slowed_broker(pytester):
    pytester.makepyfile(test_gated=GATED)
    head = broker_code("HEAD").commit  # the checkout logbench runs from
    gate = ["-p", "no:cacheprovider", "--logbench-compare-ref=HEAD"]
    gate += ["--logbench-compare-fail=throughput:10%", "--logbench-json=gate.json"]
    slowed = pytester.runpytest(*gate, "--logbench-fetch-slowdown=4")
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED, slowed.stdout.str()
    slowed.stdout.fnmatch_lines(
        [
            f"beside the reference broker of {head[:12]}, in the same rounds",
            f"*REGRESSION test_gated.py::test_fetch (fetch-warm): throughput -*% (99%: * vs the "
            f"broker of {head[:12]} in the same rounds REGRESSION beyond throughput:10%",
            "FAILED test_gated.py::test_fetch - logbench gate: *",
        ]
    )
    data = json.loads((pytester.path / "gate.json").read_text())
    [result], [verdict] = data["results"], data["verdicts"]
    assert result["workload"]["control"] == {"kind": "reference", "commit": head}
    assert all(r["control_bytes"] == r["bytes"] for r in result["rounds"])  # the same workload
    assert verdict["reference"] == head and verdict["basis"] == "relative"
    assert verdict["upper"] < -0.1 and verdict["baseline_rounds"] == 0
    # Every broker of the session, the revision's included, was stopped.
    leftovers = [
        p for p in psutil.Process().children(recursive=True) if "reference_broker" in p.cmdline()
    ]
    assert leftovers == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--logbench-compare-ref=no-such-branch"], "'no-such-branch' is not a commit"),
        (["--logbench-compare-ref=HEAD", "--logbench-broker=kafka"], "cannot pair with"),
        (["--logbench-fetch-slowdown=0.5"], "needs a factor >= 1"),
        (["--logbench-fetch-slowdown=2", "--logbench-broker=kafka"], "and the reference broker"),
    ],
)
def test_reference_options_fail_early(pytester, args, error):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--logbench-*{error}*"])
