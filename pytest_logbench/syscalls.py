"""Syscall tracing of a broker process: what the kernel saw it do.

``perf stat`` counts the syscalls of each measurement round (``SyscallCounter``); ``perf
record`` on the syscall tracepoints (``SyscallTrace``) or ``strace -f -y`` (``StraceTrace``,
heavier on the traced process, but needs no tracepoint permissions) record each ``sendfile``
and read-family call with the file its descriptor names. ``tally`` sums them into where the
payload bytes went: moved by ``sendfile``, or read from segment files into the process.

Neither tool may be allowed for an unprivileged user (perf_event_paranoid, Yama ptrace scope,
containers); ``tracer_support`` probes by attaching to a throwaway child. Every tracer is a
context manager that stops its subprocess when the window ends, also when the window raises,
and removes its temporary files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reference_broker.records import HEADER_SIZE

TracerKind = Literal["perf-stat", "perf-record", "strace"]
Evidence = Literal["auto", "perf", "strace", "counters"]

# Syscalls counted per measurement round (perf stat): the data path and the event loop.
ROUND_SYSCALLS = (
    "sendfile64",
    "pread64",
    "read",
    "sendto",
    "sendmsg",
    "write",
    "recvfrom",
    "epoll_wait",
)
# Syscalls traced for the zero-copy verdict: sendfile and every way to read a file.
_TRACED = ("sendfile64", "read", "pread64", "readv", "preadv", "preadv2")
_STRACE_FILTER = "/^(sendfile|sendfile64|read|pread64|readv|preadv|preadv2)$"
# Segment files of topics clients fetch, deleted ones too. Internal topics (``__`` names) are
# not fetched payload: Kafka's own broker reads its KRaft metadata log every 500 ms.
_SEGMENT = re.compile(r"/(?!__)[^/]+-\d+/\d+\.log(?: \(deleted\))?$")
_ATTACH_SECONDS = 10.0
_STOP_SECONDS = 30.0


class TracerError(RuntimeError):
    """A tracer could not attach or failed; the message carries its stderr."""


def _is_segment(path: str | None) -> bool:
    return path is not None and _SEGMENT.search(path) is not None


@dataclass(frozen=True)
class SyscallTally:
    """What a trace saw, reduced to the zero-copy question.

    ``copied_*``: reads of segment files returning more than a batch header (record bytes
    brought into user space); ``header_*``: reads of at most a header (offset lookups).
    """

    tool: str
    sendfile_calls: int = 0
    sendfile_bytes: int = 0
    copied_calls: int = 0
    copied_bytes: int = 0
    header_calls: int = 0
    header_bytes: int = 0


def tally(calls: Iterable[tuple[str, str | None, int]], tool: str) -> SyscallTally:
    """Reduce ``(syscall, file path or None, return value)`` triples to a ``SyscallTally``.

    For sendfile the path is the source (in_fd); failed calls (negative returns, e.g. EAGAIN
    from a full socket buffer) moved nothing and are not counted.
    """
    moved = [(name, path, ret) for name, path, ret in calls if ret > 0]
    sent = [ret for name, _, ret in moved if name.startswith("sendfile")]
    reads = [
        ret for name, path, ret in moved if not name.startswith("sendfile") and _is_segment(path)
    ]
    copied = [ret for ret in reads if ret > HEADER_SIZE]
    headers = [ret for ret in reads if ret <= HEADER_SIZE]
    return SyscallTally(
        tool, len(sent), sum(sent), len(copied), sum(copied), len(headers), sum(headers)
    )


# --- tracer processes ------------------------------------------------------------------------


class _Tracer:
    """A tracing subprocess attached to ``pid`` for a ``with`` block; subclasses start the
    tool and collect its output."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.dir = Path()
        self.process: subprocess.Popen[bytes] | None = None
        self._fds_to_close: list[int] = []

    def __enter__(self) -> _Tracer:
        self.dir = Path(tempfile.mkdtemp(prefix="logbench-trace-"))
        try:
            self._start()
        except BaseException:
            self._finish()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is None:  # a failed window has nothing worth collecting: just kill
                self._stop()
        finally:
            self._finish()

    def _start(self) -> None:
        raise NotImplementedError

    def _collect(self) -> None:
        """Read the tool's output (the temporary files still exist)."""
        raise NotImplementedError

    def _stop(self) -> None:
        """Detach gracefully (SIGINT: the tools flush their output), then collect."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                raise TracerError(
                    f"{self._name()} did not stop within {_STOP_SECONDS}s of SIGINT"
                ) from None
        if process.returncode not in (0, -signal.SIGINT, 128 + signal.SIGINT):
            raise TracerError(
                f"{self._name()} failed with status {process.returncode}: {self._stderr()}"
            )
        self._collect()

    def _finish(self) -> None:
        """Kill the tool if it still runs (error paths) and remove the temporary files."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        for fd in self._fds_to_close:
            os.close(fd)
        self._fds_to_close.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _name(self) -> str:
        return type(self).__name__

    def _stderr(self) -> str:
        try:
            text = (self.dir / "stderr").read_text(errors="replace").strip()
        except FileNotFoundError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-15:]) or "(empty stderr)"

    def _spawn(self, command: list[str]) -> None:
        with open(self.dir / "stderr", "wb") as stderr:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )


class _PerfSession(_Tracer):
    """``perf stat`` or ``perf record`` started with events disabled and enabled through its
    control fifo: perf's acknowledgement proves it is attached before the window starts."""

    mode = "abstract"

    def _perf_args(self) -> list[str]:
        raise NotImplementedError

    def _start(self) -> None:
        if shutil.which("perf") is None:
            raise TracerError("perf not found on PATH")
        ctl, ack = self.dir / "ctl", self.dir / "ack"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        # Both ends stay open until the window closes: perf must never see its fifos hang up.
        ack_fd = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        self._fds_to_close.append(ack_fd)
        ctl_fd = os.open(ctl, os.O_RDWR)  # never blocks; perf reads what we queue
        self._fds_to_close.append(ctl_fd)
        self._spawn(
            [
                "perf",
                self.mode,
                *self._perf_args(),
                "-p",
                str(self.pid),
                "-D",
                "-1",
                "--control",
                f"fifo:{ctl},{ack}",
            ]
        )
        os.write(ctl_fd, b"enable\n")
        self._await_ack(ack_fd)

    def _await_ack(self, ack_fd: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + _ATTACH_SECONDS
        received = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([ack_fd], [], [], 0.05)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    received += os.read(ack_fd, 64)
                if b"ack" in received:
                    return
            if self.process.poll() is not None:
                raise TracerError(
                    f"perf {self.mode} -p {self.pid} exited with status "
                    f"{self.process.returncode}: {self._stderr()}"
                )
        raise TracerError(
            f"perf {self.mode} did not acknowledge 'enable' within "
            f"{_ATTACH_SECONDS}s: {self._stderr()}"
        )

    def _name(self) -> str:
        return f"perf {self.mode}"


class SyscallCounter(_PerfSession):
    """Counts a process's syscalls over a window with ``perf stat`` on syscall tracepoints.

    Counting, not timing: a count does not change with the machine's load, which makes it the
    figure to compare across runs when timings are too noisy (pytest-codspeed's idea, applied
    to syscalls). ``counts`` maps each syscall name to its count after the window.
    """

    mode = "stat"

    def __init__(self, pid: int, syscalls: Iterable[str] = ROUND_SYSCALLS) -> None:
        super().__init__(pid)
        self.syscalls = tuple(syscalls)
        self.counts: dict[str, int] = {}

    def _perf_args(self) -> list[str]:
        events = ",".join(f"syscalls:sys_enter_{name}" for name in self.syscalls)
        return ["-x", ",", "-e", events, "-o", str(self.dir / "counts")]

    def _collect(self) -> None:
        self.counts = parse_perf_stat((self.dir / "counts").read_text())
        missing = set(self.syscalls) - set(self.counts)
        if missing:
            raise TracerError(f"perf stat counted no {sorted(missing)}: {self._stderr()}")


def parse_perf_stat(text: str) -> dict[str, int]:
    """``{syscall: count}`` from ``perf stat -x,`` output. ``<not counted>`` means the process
    never ran while counting was on, i.e. zero; ``<not supported>`` events are left out."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[2].startswith("syscalls:sys_enter_"):
            continue
        name = fields[2].removeprefix("syscalls:sys_enter_")
        if fields[0].isdigit():
            counts[name] = int(fields[0])
        elif fields[0] == "<not counted>":
            counts[name] = 0
    return counts


class SyscallTrace(_PerfSession):
    """Records sendfile and read-family syscalls of a process with ``perf record``; ``tally``
    is available after the window. Descriptors are named from ``/proc/PID/fd`` at both ends
    of the window (segment files stay open for the broker's life)."""

    mode = "record"

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.tally = SyscallTally("perf")
        self._fds: dict[int, str] = {}

    def _perf_args(self) -> list[str]:
        events = ",".join(
            f"syscalls:sys_{edge}_{name}" for name in _TRACED for edge in ("enter", "exit")
        )
        # No build ids and no BPF sideband thread: we need no symbols, and both cost about a
        # second at exit (measured: stop 1.5 s -> 0.5 s).
        return ["-q", "-B", "-N", "--no-bpf-event", "-e", events, "-o", str(self.dir / "perf.data")]

    def _start(self) -> None:
        super()._start()
        self._fds = _open_files(self.pid)

    def _stop(self) -> None:
        self._fds.update(_open_files(self.pid))
        super()._stop()

    def _collect(self) -> None:
        script = subprocess.run(
            ["perf", "script", "-i", str(self.dir / "perf.data"), "-F", "tid,event,trace"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if script.returncode != 0:
            raise TracerError(f"perf script failed: {script.stderr.strip()[-2000:]}")
        self.tally = tally(parse_perf_script(script.stdout, self._fds), "perf")


def _open_files(pid: int) -> dict[int, str]:
    found = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                found[int(entry.name)] = os.readlink(entry.path)
    return found


_PERF_LINE = re.compile(r"^\s*(\d+)\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)$")


def parse_perf_script(text: str, fds: dict[int, str]) -> list[tuple[str, str | None, int]]:
    """``(syscall, path, return value)`` from ``perf script -F tid,event,trace`` output.

    Enter events carry the descriptor, exit events the return value; they pair up per thread
    (a thread is in at most one syscall at a time).
    """
    pending: dict[str, tuple[str, int | None]] = {}
    calls = []
    for line in text.splitlines():
        match = _PERF_LINE.match(line)
        if match is None:
            continue
        tid, edge, name, rest = match.groups()
        if edge == "enter":
            fields = dict(part.split(": ", 1) for part in rest.split(", ") if ": " in part)
            fd = fields.get("in_fd", fields.get("fd"))
            pending[tid] = (name, int(fd, 16) if fd is not None else None)
        elif tid in pending and pending[tid][0] == name:
            _, fd = pending.pop(tid)
            ret = int(rest.strip(), 16)
            ret = ret - (1 << 64) if ret >= 1 << 63 else ret
            calls.append((name, fds.get(fd) if fd is not None else None, ret))
    return calls


class StraceTrace(_Tracer):
    """Traces sendfile and read-family syscalls of a process with ``strace -f -y``; ``tally``
    is available after the window. strace announces each attached thread on stderr, which is
    how we know the window may start."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.tally = SyscallTally("strace")

    def _start(self) -> None:
        if shutil.which("strace") is None:
            raise TracerError("strace not found on PATH")
        self._spawn(
            [
                "strace",
                "-f",
                "-y",
                "-s",
                "0",
                "-e",
                f"trace={_STRACE_FILTER}",
                "-e",
                "signal=none",
                "-o",
                str(self.dir / "trace"),
                "-p",
                str(self.pid),
            ]
        )
        assert self.process is not None
        deadline = time.monotonic() + _ATTACH_SECONDS
        while time.monotonic() < deadline:
            if "attached" in self._stderr():
                return
            if self.process.poll() is not None:
                raise TracerError(
                    f"strace -p {self.pid} exited with status "
                    f"{self.process.returncode}: {self._stderr()}"
                )
            time.sleep(0.01)
        raise TracerError(f"strace did not attach within {_ATTACH_SECONDS}s: {self._stderr()}")

    def _collect(self) -> None:
        self.tally = tally(parse_strace((self.dir / "trace").read_text(errors="replace")), "strace")


_STRACE_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
_STRACE_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
_STRACE_RETURN = re.compile(r"\)\s+=\s+(-?\d+)(?:\s.*)?$")
_STRACE_FD = re.compile(r"\d+<([^>]*)>")


def parse_strace(text: str) -> list[tuple[str, str | None, int]]:
    """``(syscall, path, return value)`` from ``strace -f -y -o`` output, joining calls that
    another thread interrupted (``<unfinished ...>`` / ``<... resumed>``)."""
    pending: dict[str, tuple[str, str]] = {}
    calls = []
    for line in text.splitlines():
        if (resumed := _STRACE_RESUMED.match(line)) is not None:
            pid, name, rest = resumed.groups()
            if pid not in pending:
                continue
            name, head = pending.pop(pid)
            args = head + rest
        elif (call := _STRACE_CALL.match(line)) is not None:
            pid, name, args = call.groups()
            if args.endswith("<unfinished ...>"):
                pending[pid] = (name, args.removesuffix("<unfinished ...>"))
                continue
        else:
            continue
        returned = _STRACE_RETURN.search(args)
        if returned is None:
            continue
        fds = _STRACE_FD.findall(args)
        # sendfile(out_fd, in_fd, ...): the source is the second descriptor.
        path = fds[1] if name.startswith("sendfile") and len(fds) > 1 else (fds or [None])[0]
        calls.append((name, path, int(returned.group(1))))
    return calls


@functools.cache
def tracer_support(kind: TracerKind) -> tuple[bool, str]:
    """Whether ``kind`` can observe a child of this process here, and why not if it cannot.

    Probed for real, once per process: a throwaway child is traced the way a broker would be,
    because permission rules (perf_event_paranoid, Yama ptrace_scope, seccomp, missing
    tracepoints) are too many to predict.
    """
    tracer: Callable[[int], _Tracer] = {
        "perf-stat": lambda pid: SyscallCounter(pid, ("sendfile64",)),
        "perf-record": SyscallTrace,
        "strace": StraceTrace,
    }[kind]
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL
    )
    try:
        with tracer(sleeper.pid):
            pass
    except (TracerError, OSError) as exc:
        return False, f"{kind} unavailable: {exc}"
    finally:
        sleeper.kill()
        sleeper.wait()
    return True, f"{kind} can trace this process's children"


def trace_for(evidence: Evidence, pid: int) -> tuple[_Tracer | None, str]:
    """The tracer ``evidence`` asks for and a note on the choice. ``auto`` prefers perf (no
    ptrace stops in the broker), then strace, then none; ``perf``/``strace`` insist
    (TracerError when unavailable); ``counters`` traces nothing."""
    if evidence == "counters":
        return None, "evidence='counters' requested"
    if evidence not in ("auto", "perf", "strace"):
        raise ValueError(f"evidence must be auto, perf, strace or counters, got {evidence!r}")
    kinds: list[TracerKind] = {
        "auto": ["perf-record", "strace"],
        "perf": ["perf-record"],
        "strace": ["strace"],
    }[evidence]
    reasons = []
    for kind in kinds:
        supported, reason = tracer_support(kind)
        if supported:
            return (SyscallTrace(pid) if kind == "perf-record" else StraceTrace(pid)), ""
        reasons.append(reason)
    if evidence != "auto":
        raise TracerError("; ".join(reasons))
    return None, "; ".join(reasons)
