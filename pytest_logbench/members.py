"""Load generators in processes of their own, so the GIL never serialises them.

A fleet of consumers on threads of one Python process takes turns at the interpreter: what it
measures is the GIL, not the broker. Each member here is a spawned process that builds its own
client (from a picklable *spec*), then waits for calls from the parent. The parent calls every
member at once and collects their answers: bytes, records, latencies — never the records.

A member process dies with the process that started it (``PR_SET_PDEATHSIG``), is terminated
when the group closes (also after a failure, a timeout or Ctrl-C), and a member that fails
sets the group's ``stop`` event so that the others end their run at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

# Spawn, not fork: the parent is a pytest process with threads (brokers' log readers, tracers);
# forking it can deadlock a child on a lock some other thread held.
_CONTEXT = multiprocessing.get_context("spawn")
START_TIMEOUT = 60.0


class Stop(Protocol):
    """A ``multiprocessing.Event`` shared by processes: the group's stop, or one ``event()``
    made for members to signal each other."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


MemberSpec = Callable[[Stop], Any]
"""Picklable (a module-level class or function): builds the member object in the child."""


def event() -> Stop:
    """An event members can share with the parent and each other: give it to their specs
    (e.g. a consumer telling a producer that it caught up)."""
    return _CONTEXT.Event()


class MemberFailed(RuntimeError):
    """A member raised, died or did not answer; the message carries its traceback."""


def _serve(spec: MemberSpec, stop: Stop, conn: multiprocessing.connection.Connection) -> None:
    """The child's loop: build the member, then answer ``(method, args)`` calls until told to
    stop or until the parent goes away."""
    from pytest_logbench.brokers import die_with_parent

    die_with_parent()
    try:
        member = spec(stop)
    except BaseException as exc:
        conn.send(("error", _failure(exc)))
        return
    conn.send(("ready", None))
    try:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except EOFError:
                return
            if method is None:
                return
            try:
                conn.send(("ok", getattr(member, method)(*args, **kwargs)))
            except BaseException as exc:
                stop.set()
                conn.send(("error", _failure(exc)))
    finally:
        close = getattr(member, "close", None)
        if close is not None:
            close()


def _failure(exc: BaseException) -> tuple[BaseException | None, str]:
    """The exception itself when it survives pickling (the parent re-raises its type), and
    its traceback as text either way."""
    import pickle

    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None, text
    return exc, text


class MemberGroup:
    """Processes built from ``specs``; ``call(method, *args)`` runs a method on all at once.

    >>> with MemberGroup([ConsumerSpec(bootstrap)] * 4) as group:
    ...     transfers = group.call("consume", "events", 0, end)
    """

    def __init__(
        self,
        specs: Sequence[MemberSpec],
        *,
        names: Sequence[str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.names = list(names or (f"member-{i}" for i in range(len(specs))))
        self.stop: Stop = event()
        self._processes: list[Any] = []
        self._conns: list[multiprocessing.connection.Connection] = []
        try:
            for spec, name in zip(specs, self.names, strict=True):
                parent, child = _CONTEXT.Pipe()
                process = _CONTEXT.Process(
                    target=_serve,
                    args=(spec, self.stop, child),
                    name=f"logbench-{name}",
                    daemon=True,
                )
                process.start()
                child.close()
                self._processes.append(process)
                self._conns.append(parent)
            self._collect("ready", start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def call(self, method: str, *args: Any, timeout: float = 600.0, **kwargs: Any) -> list[Any]:
        """Send the call to every member, then wait for all answers (in member order)."""
        return self.call_each([(method, args, kwargs)] * len(self._conns), timeout=timeout)

    def call_each(
        self, calls: Sequence[tuple[str, Sequence[Any], dict[str, Any]]], *, timeout: float = 600.0
    ) -> list[Any]:
        """Send each member its own ``(method, args, kwargs)`` (members of different kinds,
        e.g. a producer and a consumer, working at once), then wait for all answers."""
        if len(calls) != len(self._conns):
            raise ValueError(f"{len(calls)} calls for {len(self._conns)} members")
        for conn, (method, args, kwargs) in zip(self._conns, calls, strict=True):
            conn.send((method, tuple(args), kwargs))
        return self._collect("ok", timeout)

    def _collect(self, expected: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        answers: list[Any] = []
        failures: list[str] = []
        cause: BaseException | None = None
        for name, conn, process in zip(self.names, self._conns, self._processes, strict=True):
            while not conn.poll(min(0.5, max(0.0, deadline - time.monotonic()))):
                if not process.is_alive():
                    failures.append(f"{name} died (exit code {process.exitcode})")
                    break
                if time.monotonic() >= deadline:
                    failures.append(f"{name} did not answer within {timeout:g} s")
                    break
            else:
                try:
                    kind, value = conn.recv()
                except EOFError:  # the member's end closed: it died
                    process.join(timeout=5)
                    failures.append(f"{name} died (exit code {process.exitcode})")
                    self.stop.set()
                    continue
                if kind == expected:
                    answers.append(value)
                    continue
                exc, text = value
                cause = cause or exc
                failures.append(f"{name} failed:\n{text}")
            self.stop.set()
        if failures:
            raise MemberFailed("\n".join(failures)) from cause
        return answers

    def close(self) -> None:
        """Ask every member to end, then terminate what is left. Idempotent."""
        self.stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send((None, (), {}))
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._processes, self._conns = [], []

    def __enter__(self) -> MemberGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
