"""syscalls.py and assert_zero_copy: parsers on recorded tool output, and verdicts on real
zero-copy, --copy and TLS brokers with every kind of evidence this machine allows."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import psutil
import pytest

from pytest_logbench import syscalls
from pytest_logbench.assertions import assert_zero_copy
from pytest_logbench.client import Consumer, Producer
from pytest_logbench.syscalls import (
    StraceTrace,
    SyscallCounter,
    SyscallTrace,
    TracerError,
    parse_perf_script,
    parse_perf_stat,
    parse_strace,
    tally,
    tracer_support,
)
from pytest_logbench.workloads import client_options

SEGMENT = "/data/t-0/00000000000000000000.log"

PERF_SCRIPT = """\
   101    syscalls:sys_enter_pread64: fd: 0x0000000a, buf: 0x7f10, count: 0x0000003d, pos: 0x0
   101     syscalls:sys_exit_pread64: 0x3d
   101 syscalls:sys_enter_sendfile64: out_fd: 0xd, in_fd: 0xa, offset: 0x7ffd, count: 0x800000
   102       syscalls:sys_enter_read: fd: 0x00000003, buf: 0x55, count: 0x00001000
   101  syscalls:sys_exit_sendfile64: 0x3c0000
   102        syscalls:sys_exit_read: 0x200
   101 syscalls:sys_enter_sendfile64: out_fd: 0xd, in_fd: 0xa, offset: 0x7ffd, count: 0x440000
   101  syscalls:sys_exit_sendfile64: 0xfffffffffffffff5
   101    syscalls:sys_enter_pread64: fd: 0x0000000a, buf: 0x7f10, count: 0x00040000, pos: 0x0
   101     syscalls:sys_exit_pread64: 0x40000
   101    syscalls:sys_enter_pread64: fd: 0x0000000e, buf: 0x7f10, count: 0x00040000, pos: 0x0
   101     syscalls:sys_exit_pread64: 0x40000
"""


def test_parse_perf_script_pairs_enter_and_exit_per_thread():
    calls = parse_perf_script(PERF_SCRIPT, {10: SEGMENT, 3: "/etc/hosts"})
    assert calls == [
        ("pread64", SEGMENT, 61),
        ("sendfile64", SEGMENT, 0x3C0000),
        ("read", "/etc/hosts", 0x200),
        ("sendfile64", SEGMENT, -11),  # EAGAIN: the socket buffer was full
        ("pread64", SEGMENT, 0x40000),
        ("pread64", None, 0x40000),  # fd 14 was not open at either end of the window
    ]
    counted = tally(calls, "perf")
    assert (counted.sendfile_calls, counted.sendfile_bytes) == (1, 0x3C0000)
    assert (counted.copied_calls, counted.copied_bytes) == (1, 0x40000)
    assert (counted.header_calls, counted.header_bytes) == (1, 61)


STRACE = f"""\
500 pread64(10<{SEGMENT}>, ""..., 61, 0) = 61
500 sendfile(13<socket:[29119]>, 10<{SEGMENT}>, [0] => [4191389], 8388608) = 4191389
500 sendfile(13<socket:[29119]>, 10<{SEGMENT}>, [4191389], 4197219) = -1 EAGAIN (Resource...)
501 read(3</etc/hosts>, <unfinished ...>
500 pread64(10<{SEGMENT} (deleted)>, <unfinished ...>
501 <... read resumed>""..., 4096) = 200
500 <... pread64 resumed>""..., 262144, 0) = 262144
500 +++ exited with 0 +++
"""


def test_parse_strace_joins_interrupted_calls_and_names_the_source_file():
    calls = parse_strace(STRACE)
    assert calls == [
        ("pread64", SEGMENT, 61),
        ("sendfile", SEGMENT, 4191389),
        ("sendfile", SEGMENT, -1),
        ("read", "/etc/hosts", 200),
        ("pread64", f"{SEGMENT} (deleted)", 262144),
    ]
    counted = tally(calls, "strace")
    assert (counted.sendfile_bytes, counted.copied_bytes, counted.header_calls) == (
        4191389,
        262144,
        1,
    )


def test_parse_perf_stat_reads_counts_and_not_counted_as_zero():
    text = (
        "# started on ...\n\n"
        "6,,syscalls:sys_enter_sendfile64,9668325,100.00,,\n"
        "<not counted>,,syscalls:sys_enter_pread64,0,100.00,,\n"
        "<not supported>,,syscalls:sys_enter_nosuch,0,100.00,,\n"
    )
    assert parse_perf_stat(text) == {"sendfile64": 6, "pread64": 0}


# --- verdicts on real brokers ----------------------------------------------------------------


def _fetcher(broker, size=8 << 20):
    """Seed a topic and return a callable that fetches all of it once."""
    options = client_options(broker)
    producer = Producer(broker.bootstrap, **options)
    try:
        producer.produce("zc", size)
    finally:
        producer.close()
    consumer = Consumer(broker.bootstrap, **options)
    return consumer, lambda: consumer.consume("zc")


def _evidence_modes():
    """Every evidence this machine allows, with the words its message must contain."""
    modes = [("counters", "broker counters only (evidence='counters' requested)")]
    if tracer_support("perf-record")[0]:
        modes.append(("perf", "perf tracepoints"))
    if tracer_support("strace")[0]:
        modes.append(("strace", "strace -f -y"))
    return modes


def test_zero_copy_broker_passes_with_every_available_evidence(broker):
    consumer, fetch = _fetcher(broker)
    try:
        auto = assert_zero_copy(broker, during=fetch)
        assert auto.ok and auto.payload_bytes >= 8 << 20
        for evidence, words in _evidence_modes():
            report = assert_zero_copy(broker, during=fetch, evidence=evidence)
            assert words in report.message()
            if report.trace is not None:
                assert report.trace.sendfile_bytes >= report.payload_bytes
                assert report.trace.copied_bytes == 0
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("options", "path_words"),
    [
        ({"copy": True}, "copy path (pread into user space + send)"),
        ({"tls": True}, "TLS path (pread, encrypt in user space, send)"),
    ],
    ids=["copy", "tls"],
)
def test_copying_brokers_fail_with_every_available_evidence(broker_factory, options, path_words):
    broker = broker_factory(**options)
    consumer, fetch = _fetcher(broker)
    try:
        for evidence, words in _evidence_modes():
            with pytest.raises(AssertionError) as failure:
                assert_zero_copy(broker, during=fetch, evidence=evidence)
            message = str(failure.value)
            assert "NOT zero-copy" in message and words in message and path_words in message
            if evidence != "counters":
                assert f"{evidence}: sendfile moved only 0 B" in message
                assert "of segment data into the broker's memory" in message
    finally:
        consumer.close()


def test_without_tracers_the_verdict_falls_back_to_counters_and_says_why(
    broker_factory, monkeypatch
):
    monkeypatch.setattr(
        syscalls,
        "tracer_support",
        lambda kind: (False, f"{kind} unavailable: forbidden by this test"),
    )
    broker = broker_factory(copy=True)
    consumer, fetch = _fetcher(broker, 1 << 20)
    try:
        with pytest.raises(AssertionError) as failure:
            assert_zero_copy(broker, during=fetch)
        message = str(failure.value)
        assert (
            "evidence: broker counters only (perf-record unavailable: forbidden by this "
            "test; strace unavailable: forbidden by this test)" in message
        )
        assert "left by the copy path" in message
        with pytest.raises(TracerError, match="forbidden"):
            assert_zero_copy(broker, during=fetch, evidence="strace")
    finally:
        consumer.close()


def test_a_window_without_fetches_proves_nothing(broker):
    with pytest.raises(AssertionError, match="no payload bytes were fetched"):
        assert_zero_copy(broker, during=lambda: None, evidence="counters")


# --- tracer processes are always cleaned up -------------------------------------------------


def _tracer_processes() -> list[str]:
    return [
        p.name()
        for p in psutil.Process().children(recursive=True)
        if p.name() in ("perf", "strace")
    ]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Tracers keep their files in the temp dir: give them one no other session shares."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("tracer", [SyscallCounter, SyscallTrace, StraceTrace])
def test_tracers_stop_and_clean_up_when_the_window_fails(tracer, private_tmp):
    kind = {SyscallCounter: "perf-stat", SyscallTrace: "perf-record", StraceTrace: "strace"}
    supported, reason = tracer_support(kind[tracer])
    if not supported:
        pytest.skip(reason)
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RuntimeError, match="the window failed"), tracer(target.pid):
            raise RuntimeError("the window failed")
    finally:
        target.kill()
        target.wait()
    assert _tracer_processes() == []
    assert list(private_tmp.iterdir()) == []


def test_a_tracer_that_cannot_attach_fails_clearly_and_leaves_nothing(private_tmp):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for tracer in (StraceTrace, SyscallCounter):
        if not tracer_support("strace" if tracer is StraceTrace else "perf-stat")[0]:
            continue
        with pytest.raises(TracerError, match=f"-p {gone.pid}"), tracer(gone.pid):
            pass
    assert _tracer_processes() == []
    assert list(private_tmp.iterdir()) == []
