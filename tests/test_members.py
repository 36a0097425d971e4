"""Load generators in their own processes: answers come back, failures cross over with their
tracebacks, and no member process outlives its group, its test or its pytest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pytest_logbench.members import MemberFailed, MemberGroup

pytest_plugins = ["pytester"]


class Echo:
    """A member that answers with its pid and what it was asked, or fails on request."""

    def __init__(self, stop):
        self.stop = stop

    def ask(self, value, *, fail=False):
        if fail:
            raise ValueError(f"member was told to fail on {value}")
        return os.getpid(), value

    def wait_for_stop(self, seconds):
        return self.stop.wait(seconds)

    def exit(self):
        os._exit(3)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not all(map(_gone, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(map(_gone, pids))


def test_each_member_is_a_process_and_answers_in_order():
    with MemberGroup([Echo] * 3) as group:
        answers = group.call("ask", "x")
        pids = group.pids
    assert [value for _, value in answers] == ["x"] * 3
    assert sorted(pid for pid, _ in answers) == sorted(pids)
    assert os.getpid() not in pids and len(set(pids)) == 3
    assert _wait_gone(pids)


def test_a_failing_member_stops_the_others_and_brings_its_traceback():
    with MemberGroup([Echo] * 2) as group:
        # One member fails; the other waits on the shared stop event, which the failure sets.
        group._conns[0].send(("ask", ("boom",), {"fail": True}))
        group._conns[1].send(("wait_for_stop", (30,), {}))
        started = time.monotonic()
        with pytest.raises(MemberFailed, match="member-0 failed") as failure:
            group._collect("ok", timeout=60)
        assert time.monotonic() - started < 20  # woken by the stop event, not the 30 s wait
    assert isinstance(failure.value.__cause__, ValueError)
    assert "member was told to fail on boom" in str(failure.value)
    assert "Traceback" in str(failure.value)


def test_a_member_that_dies_is_reported():
    with MemberGroup([Echo]) as group, pytest.raises(MemberFailed, match=r"died \(exit code 3\)"):
        group.call("exit", timeout=30)


MEMBERS_TEST = """
import json, os, time
from pathlib import Path
from pytest_logbench.members import MemberGroup

class Idle:
    def __init__(self, stop):
        pass
    def sleep(self, seconds):
        time.sleep(seconds)

def test_members(request):
    group = MemberGroup([Idle] * 2)
    request.addfinalizer(group.close)
    Path(os.environ["LOGBENCH_RECORD"]).write_text(json.dumps(group.pids))
    if os.environ["OUTCOME"] == "fails":
        assert False
    group.call("sleep", 60)
"""


def _record(pytester, monkeypatch) -> Path:
    record = pytester.path / "record.json"
    monkeypatch.setenv("LOGBENCH_RECORD", str(record))
    pytester.makepyfile(test_inner=MEMBERS_TEST)
    return record


def test_members_of_a_failed_test_are_gone(pytester, monkeypatch):
    record = _record(pytester, monkeypatch)
    monkeypatch.setenv("OUTCOME", "fails")
    pytester.runpytest_subprocess().assert_outcomes(failed=1)
    assert _wait_gone(json.loads(record.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["signal", "thread"])
def test_members_of_a_timed_out_test_are_gone(pytester, monkeypatch, method):
    """The signal method unwinds through the finalizer; the thread method exits the process
    outright, and the members die with it (PR_SET_PDEATHSIG)."""
    record = _record(pytester, monkeypatch)
    monkeypatch.setenv("OUTCOME", "hangs")
    result = pytester.runpytest_subprocess("--timeout", "5", "--timeout-method", method)
    assert result.ret != 0
    assert _wait_gone(json.loads(record.read_text()))


@pytest.mark.slow
def test_members_die_with_an_interrupted_or_killed_pytest(pytester, monkeypatch):
    record = _record(pytester, monkeypatch)
    monkeypatch.setenv("OUTCOME", "hangs")
    for sig in (signal.SIGINT, signal.SIGKILL):
        record.unlink(missing_ok=True)
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(pytester.path)],
            cwd=pytester.path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not record.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert record.exists(), "the inner test never started its members"
            time.sleep(0.3)
            inner.send_signal(sig)
            inner.wait(timeout=30)
        finally:
            inner.kill()
        assert _wait_gone(json.loads(record.read_text())), f"members outlived {sig.name}"
