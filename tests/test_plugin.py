"""The plugin as a user sees it: options, markers, fixtures, skips, failures and cleanup.

Inner test sessions run through ``pytester``; where an inner session has to die (a timeout that
exits the process, Ctrl-C) it runs in a subprocess so this session survives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["pytester"]

RECORD_PID = """
import json, os
from pathlib import Path

def record(broker):
    Path(os.environ["LOGBENCH_RECORD"]).write_text(json.dumps(
        {"pid": broker.pid, "log_dir": str(broker.log_dir)}))
"""


def _recorded(path: Path) -> tuple[int, Path]:
    import json

    data = json.loads(path.read_text())
    return data["pid"], Path(data["log_dir"])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_markers_and_options_are_documented(pytester):
    markers = pytester.runpytest("--markers").stdout.str()
    assert "slow:" in markers and "logbench_local(*needs):" in markers
    help_text = pytester.runpytest("--help").stdout.str()
    for option in ("--logbench-bootstrap", "--logbench-log-dir", "--logbench-keep-data"):
        assert option in help_text


def test_bad_bootstrap_is_a_usage_error(pytester):
    result = pytester.runpytest("--logbench-bootstrap", "nohostport")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--logbench-bootstrap expects HOST:PORT*"])


@pytest.mark.parametrize("outcome", ["passes", "fails"])
def test_broker_is_stopped_and_its_data_removed(pytester, monkeypatch, outcome):
    record = pytester.path / "record.json"
    monkeypatch.setenv("LOGBENCH_RECORD", str(record))
    pytester.makeconftest(RECORD_PID)
    pytester.makepyfile(f"""
        from conftest import record
        from pytest_logbench.client import HarnessClient

        def test_it(broker):
            record(broker)
            with HarnessClient(broker.bootstrap) as client:
                client.create_topic("t")
            assert {outcome == "passes"}
    """)
    result = pytester.runpytest()
    result.assert_outcomes(**{"passed" if outcome == "passes" else "failed": 1})
    pid, log_dir = _recorded(record)
    assert _gone(pid)
    assert not log_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["signal", "thread"])
def test_timed_out_test_leaves_no_broker(pytester, monkeypatch, method):
    """pytest-timeout's signal method unwinds through teardown; its thread method exits the
    process outright, and the broker dies with it (PR_SET_PDEATHSIG)."""
    record = pytester.path / "record.json"
    monkeypatch.setenv("LOGBENCH_RECORD", str(record))
    pytester.makeconftest(RECORD_PID)
    pytester.makepyfile("""
        import time
        from conftest import record

        def test_hangs(broker):
            record(broker)
            time.sleep(60)
    """)
    result = pytester.runpytest_subprocess("--timeout", "3", "--timeout-method", method)
    assert result.ret != 0
    pid, log_dir = _recorded(record)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)
    if method == "signal":
        assert not log_dir.exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_broker(pytester, tmp_path):
    record = tmp_path / "record.json"
    pytester.makeconftest(RECORD_PID)
    pytester.makepyfile("""
        import time
        from conftest import record

        def test_waits(broker):
            record(broker)
            time.sleep(60)
    """)
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(pytester.path)],
        cwd=pytester.path,
        env={**os.environ, "LOGBENCH_RECORD": str(record)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists(), "the inner test never started its broker"
        time.sleep(0.2)
        inner.send_signal(signal.SIGINT)
        inner.wait(timeout=30)
    finally:
        inner.kill()
    pid, log_dir = _recorded(record)
    assert _gone(pid)
    assert not log_dir.exists()


def test_broker_that_fails_to_start_reports_its_stderr(pytester):
    pytester.makepyfile("""
        def test_it(broker_factory):
            broker_factory(extra_args=("--segment-bytes", "12"))
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=0, failed=1)
    result.stdout.fnmatch_lines(["*BrokerStartError*exited with status*", "*segment_bytes*"])


def test_launcher_hook_replaces_the_reference_broker(pytester):
    pytester.makeconftest("""
        from pytest_logbench.brokers import ReferenceBroker

        launched = []

        def pytest_logbench_launch_broker(log_dir, options, work_dir):
            launched.append(log_dir)
            return ReferenceBroker(log_dir, options.with_(num_partitions=3), work_dir=work_dir)

        def pytest_logbench_broker_ready(broker):
            launched.append("ready")
    """)
    pytester.makepyfile("""
        from conftest import launched
        from pytest_logbench.client import HarnessClient
        from reference_broker.record_codec import build_batch

        def test_it(broker):
            with HarnessClient(broker.bootstrap) as client:
                client.produce("auto", 0, build_batch([(None, b"x", [])]))
                assert client.partitions("auto") == 3
            assert launched[-1] == "ready"
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_launcher_hook_of_a_conftest_changes_only_the_tests_beside_it(pytester):
    """pytest calls a conftest's hooks for the tests under its directory only."""
    hooks = pytester.mkpydir("hooks")
    (hooks / "conftest.py").write_text(
        "from pytest_logbench.brokers import ReferenceBroker\n\n"
        "def pytest_logbench_launch_broker(log_dir, options, work_dir):\n"
        "    return ReferenceBroker(log_dir, options.with_(num_partitions=3), work_dir=work_dir)\n"
    )
    check = """
        from pytest_logbench.client import HarnessClient
        from reference_broker.record_codec import build_batch

        def test_partitions(broker):
            with HarnessClient(broker.bootstrap) as client:
                client.produce("auto", 0, build_batch([(None, b"x", [])]))
                assert client.partitions("auto") == {n}
    """
    (hooks / "test_inside.py").write_text(textwrap.dedent(check.format(n=3)))
    pytester.makepyfile(test_outside=check.format(n=1))
    pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.slow
def test_brokers_are_isolated_under_xdist(pytester):
    """Ports come from the kernel and data dirs from mkdtemp, so parallel workers never share a
    broker or a directory."""
    pytest.importorskip("xdist")
    pytester.makepyfile("""
        import pytest
        from pytest_logbench.client import HarnessClient
        from reference_broker.record_codec import build_batch

        @pytest.mark.parametrize("n", range(4))
        def test_own_broker(broker, n):
            with HarnessClient(broker.bootstrap) as client:
                for _ in range(n + 1):
                    client.produce("t", 0, build_batch([(None, b"x", [])]))
                assert client.list_offset("t", 0, -1)[0] == n + 1
    """)
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=4)


def test_producer_and_consumer_fixtures_are_bound_to_the_broker(broker, producer, consumer):
    sent = producer.produce("bound", 1 << 20)
    fetched = consumer.consume("bound")
    assert fetched.bytes == sent.bytes and fetched.records == sent.records
    assert broker.metric("logbench_produce_bytes_total") == sent.bytes


def test_kept_data_is_under_pytests_basetemp_and_its_path_printed(pytester):
    pytester.makepyfile("""
        def test_it(broker):
            assert broker.log_dir.is_dir()
    """)
    result = pytester.runpytest("--logbench-keep-data", "-s")
    result.assert_outcomes(passed=1)
    [line] = [x for x in result.outlines if x.startswith("logbench: kept the brokers' data")]
    kept = Path(line.rsplit(" in ", 1)[1])
    assert kept.is_dir() and any(kept.iterdir())
    assert str(pytester.path.parent) in str(kept) or "pytest-of" in str(kept)


HYPOTHESIS_TEST = """
from hypothesis import given, settings, strategies as st


@given(st.integers())
def test_profile(n):
    print("PROFILE", settings.get_current_profile_name(), settings.default.max_examples)
"""


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_plugin_registers_its_hypothesis_profiles(pytester, monkeypatch, how):
    pytester.makepyfile(HYPOTHESIS_TEST)
    args = ["-s", "-p", "no:cacheprovider"]
    if how == "option":
        args.append("--hypothesis-profile=nightly")
    else:
        monkeypatch.setenv("LOGBENCH_HYPOTHESIS_PROFILE", "nightly")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*PROFILE nightly 1000*"])


def test_the_plugin_leaves_a_projects_hypothesis_defaults_alone(pytester, monkeypatch):
    """Whatever hypothesis picks by itself (``default``, or ``ci`` when the CI variable is
    set) is what it picks with the plugin loaded."""
    monkeypatch.delenv("LOGBENCH_HYPOTHESIS_PROFILE", raising=False)
    pytester.makepyfile(HYPOTHESIS_TEST)

    def chosen(*args: str) -> set[str]:
        result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
        result.assert_outcomes(passed=1)
        return {line.strip() for line in result.outlines if line.startswith("PROFILE")}

    without_plugin = chosen("-p", "no:logbench")
    assert len(without_plugin) == 1
    assert chosen() == without_plugin
