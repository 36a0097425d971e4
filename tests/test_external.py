"""The same tests against an external cluster (``--logbench-bootstrap``): what skips, when,
where ``-rs`` points, what the options provide, and topic settings as topic configs.

The external cluster is a reference broker started here, apart from the inner sessions."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_logbench.brokers import ReferenceBroker
from pytest_logbench.client import Producer

pytest_plugins = ["pytester"]

# Each inner test touches this file first: a skip decided before the test ran leaves none.
RAN = """
from pathlib import Path

def ran(name):
    with Path(__file__).with_name("ran.txt").open("a") as f:
        f.write(name + "\\n")
"""

NEEDING_TESTS = """
import pytest
from conftest import ran
from pytest_logbench.client import Producer
from pytest_logbench.workloads import FetchWorkload

def test_kill(broker):
    ran("kill")
    broker.kill()

def test_copy_mode(broker_factory):
    ran("copy")
    broker_factory(copy=True)

def test_page_cache(broker, page_cache, topic):
    ran("page_cache")
    Producer(broker.bootstrap).produce(topic, 1 << 20)
    assert page_cache.residency(broker, topic=topic).files

def test_counters(broker, topic):
    ran("counters")
    Producer(broker.bootstrap).produce(topic, 1 << 20)
    assert broker.metric("logbench_produce_bytes_total") >= 1 << 20

def test_cpu(broker, measure):
    ran("cpu")
    measure(None).describe("cpu")

@pytest.mark.logbench_local("log_dir")
def test_marked_log_dir(broker):
    ran("marked_log_dir")
    assert broker.segment_files() is not None

@pytest.mark.logbench_local
def test_marked_process(broker):
    ran("marked_process")

def test_warm_fetch(broker, measure, topic):
    ran("warm_fetch")
    measure(FetchWorkload(broker, "1 MiB", topic=topic), rounds=1, warmup=0)

def test_address(broker):
    ran("address")
    assert broker.bootstrap
"""


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory):
    broker = ReferenceBroker(tmp_path_factory.mktemp("external") / "log").start()
    yield broker
    broker.stop()


def _ran(pytester: pytest.Pytester) -> set[str]:
    path = pytester.path / "ran.txt"
    return set(path.read_text().split()) if path.exists() else set()


def test_what_needs_a_local_broker_skips_before_it_runs(pytester, external):
    pytester.makeconftest(RAN)
    pytester.makepyfile(test_needs=NEEDING_TESTS)
    result = pytester.runpytest("--logbench-bootstrap", external.bootstrap, "-rs")
    result.assert_outcomes(passed=1, skipped=8)
    assert _ran(pytester) == {"address"}
    skips = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert len(skips) == 8 and all("test_needs.py:" in line for line in skips), skips
    result.stdout.fnmatch_lines_random(
        [
            "*test_needs.py:6: needs a broker process started by logbench (for .kill)*",
            "*test_needs.py:10: *(for broker_factory(copy=...))*",
            "*needs the broker's log dir (--logbench-log-dir) (for the page_cache fixture)*",
            "*counters (--logbench-metrics-url) (for .metric)*",
            '*(for describe("cpu"))*',
            "*(for the logbench_local marker)*",
            "*(for FetchWorkload(cache=warm or cold))*",
        ]
    )


def test_log_dir_and_metrics_url_provide_what_they_name(pytester, external):
    pytester.makeconftest(RAN)
    pytester.makepyfile(test_needs=NEEDING_TESTS)
    result = pytester.runpytest(
        "--logbench-bootstrap",
        external.bootstrap,
        "--logbench-log-dir",
        str(external.log_dir),
        "--logbench-metrics-url",
        external.metrics_url,
    )
    result.assert_outcomes(passed=5, skipped=4)
    assert _ran(pytester) == {"page_cache", "counters", "marked_log_dir", "warm_fetch", "address"}


def test_a_local_power_used_by_a_helper_skips_at_the_tests_location(pytester, external):
    pytester.makepyfile("""
        def kill(broker):
            broker.kill()

        def test_helper_kills(broker):
            kill(broker)
    """)
    result = pytester.runpytest("--logbench-bootstrap", external.bootstrap, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * test_a_local_power_used_by_a_helper*.py:4: kill()*"])


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A port nothing listens on while the context lasts (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_bootstrap_is_one_usage_error(pytester):
    with _closed_port() as port:
        pytester.makepyfile("def test_a(broker): pass\ndef test_b(broker): pass")
        result = pytester.runpytest("--logbench-bootstrap", f"127.0.0.1:{port}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--logbench-bootstrap 127.0.0.1:{port}: cannot connect*"])
    assert "ConnectionRefusedError" not in result.stdout.str()


def test_topic_settings_become_topic_configs(pytester, external):
    pytester.makepyfile("""
        import pytest
        from pytest_logbench.client import HarnessClient, Producer

        def test_shaped(broker_factory, topic):
            broker = broker_factory(segment_bytes=1 << 20, num_partitions=2)
            with HarnessClient(broker.bootstrap) as client:
                assert client.partitions(topic) == 2
            Producer(broker.bootstrap).produce(topic, 3 << 20)
            assert len(broker.segment_files(topic, 0)) >= 3

        def test_the_same_settings_twice(broker_factory, topic):
            broker_factory(num_partitions=2)
            broker_factory(num_partitions=2)
            with pytest.raises(ValueError, match="already created"):
                broker_factory(num_partitions=3)

        def test_more_topics_later(broker_factory, topic_factory):
            broker = broker_factory(num_partitions=3)
            later = topic_factory("later")
            with HarnessClient(broker.bootstrap) as client:
                assert client.partitions(later) == 3
    """)
    result = pytester.runpytest(
        "--logbench-bootstrap", external.bootstrap, "--logbench-log-dir", str(external.log_dir)
    )
    result.assert_outcomes(passed=3)


def test_topic_settings_without_a_topic_fixture_warn(pytester, external):
    pytester.makepyfile("""
        def test_unshaped(broker_factory):
            broker_factory(segment_bytes=1 << 20, fetch_max_bytes=1 << 20)
    """)
    result = pytester.runpytest("--logbench-bootstrap", external.bootstrap)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*_warn.py:2: PytestWarning: broker settings *fetch_max_bytes* stay the external*",
            "*{'segment.bytes': '1048576'}*topic / topic_factory fixtures only*",
        ]
    )


def test_topic_names_are_the_tests_own(pytester):
    pytester.makepyfile("""
        import re

        def test_names(topic, topic_factory):
            assert re.fullmatch(r"test_names-[0-9a-f]{8}", topic)
            more = topic_factory("orders")
            assert re.fullmatch(r"test_names-orders-[0-9a-f]{8}", more)
            assert topic_factory.names == [topic, more]
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_page_cache_residency_can_be_scoped_to_a_topic(broker, page_cache, topic_factory):
    mine, other = topic_factory("mine"), topic_factory("other")
    producer = Producer(broker.bootstrap)
    producer.produce(mine, 1 << 20)
    producer.produce(other, 1 << 20)
    producer.close()
    scoped = page_cache.residency(broker, topic=mine)
    assert {Path(f.path).parent.name for f in scoped.files} == {f"{mine}-0"}
    both = page_cache.evict(broker, topic=[mine, other])
    assert {Path(f.path).parent.name for f in both.after.files} == {f"{mine}-0", f"{other}-0"}
    with pytest.raises(TypeError, match="not a broker"):
        page_cache.residency(broker.log_dir, topic=mine)


def test_a_cpu_figure_asked_by_a_helper_skips_instead_of_raising(pytester, external):
    pytester.makepyfile("""
        from pytest_logbench.workloads import ProduceWorkload

        def cpu_line(result):
            return result.describe("cpu")

        def test_cpu_in_a_helper(broker, measure, topic):
            workload = ProduceWorkload(broker, "1 MiB", topic=topic)
            cpu_line(measure(workload, rounds=1, warmup=0, control=False))
    """)
    result = pytester.runpytest("--logbench-bootstrap", external.bootstrap, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*.py:6: *cpu was not measured (the broker is not a local*"])
