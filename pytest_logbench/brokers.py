"""Brokers as tests see them: a reference broker subprocess, or an external cluster by address.

A test talks to a broker only through its bootstrap address, so the same test runs against the
reference broker and a real Kafka cluster. What only a local process allows (page cache of its
log dir, SIGKILL, restart, a memory budget) is on ``ReferenceBroker`` alone; ``ExternalBroker``
raises ``LocalOnly`` for it, which the fixtures turn into a skip with the reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from subprocess import Popen
from typing import TYPE_CHECKING, Any

from pytest_logbench.counters import metric_sum
from reference_broker.config import READY_PREFIX, SETTINGS

if TYPE_CHECKING:
    from pytest_logbench.disk import DiskProfile, DiskThrottle
    from pytest_logbench.memory import MemoryBudget

STDERR_TAIL_LINES = 30


PR_SET_PDEATHSIG = 1


def user_cache_dir() -> Path:
    """logbench's cache directory (``$XDG_CACHE_HOME/logbench``, else ``~/.cache/logbench``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "logbench"


def broker_python_env() -> dict[str, str]:
    """A reference broker's environment: with ``PYTHONDONTWRITEBYTECODE`` set, its bytecode is
    cached under ``user_cache_dir()`` (compiling on every start cost 50 of 175 ms, measured)."""
    env = dict(os.environ)
    if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        env.setdefault("PYTHONPYCACHEPREFIX", str(user_cache_dir() / "pycache"))
    return env


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs the broker if pytest dies.

    Fixture teardown stops brokers in the normal case; this covers the cases where teardown
    never runs (pytest-timeout's thread method calls os._exit, a SIGKILLed test run).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class BrokerStartError(RuntimeError):
    """The broker died or did not print its READY line in time; carries its stderr tail."""


class LocalOnly(RuntimeError):
    """The operation needs a broker process on this machine (kill, restart, page cache...)."""


class NotMeasuredHere(LocalOnly, ValueError):
    """A result metric that only a local broker process yields (CPU, syscalls, controls)
    asked of a result measured on an external cluster: a skip in tests, still a
    ``ValueError`` (a metric not measured) to code that catches that."""


class ReferenceOnly(LocalOnly):
    """The operation or option exists only on the reference broker (its ``logbench_*``
    counters, ``copy``, ``fetch_slowdown``...); like ``LocalOnly``, fixtures turn it into a
    skip with the reason."""


@dataclass(frozen=True)
class BrokerOptions:
    """How to start a broker: the plugin's own options, and any broker setting by name.

    Broker settings are the table of ``reference_broker.config.SETTINGS`` (``segment_bytes``,
    ``fsync``, ``copy``, ``fetch_slowdown``, ...), given through ``with_`` (as
    ``broker_factory(segment_bytes=1 << 20)`` does). A setting not given keeps the broker's
    own default and reads as None here. A name that is neither an option nor a setting raises
    TypeError listing the valid ones.
    """

    kind: str = "reference"  # or "kafka": Apache Kafka (pytest_logbench.kafka)
    tls: bool = False
    memory_limit_bytes: int | None = None
    disk: str | DiskProfile | None = None  # "hdd", "ssd" or a DiskProfile (pytest_logbench.disk)
    extra_args: tuple[str, ...] = ()
    startup_timeout: float = 30.0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields: a broker setting not set is None.
        if name in SETTINGS:
            return self.settings.get(name)
        raise AttributeError(f"BrokerOptions has no option or broker setting {name!r}")

    def with_(self, **changes: Any) -> BrokerOptions:
        """A copy with some options or settings changed (unknown names raise TypeError);
        a setting changed to None goes back to the broker's default."""
        own = {f.name for f in fields(self)} - {"settings"}
        unknown = sorted(set(changes) - own - set(SETTINGS))
        if unknown:
            raise TypeError(
                f"unknown broker option(s) {unknown}; options: {sorted(own)}; "
                f"broker settings: {sorted(SETTINGS)}"
            )
        settings = dict(self.settings)
        for name, value in changes.items():
            if name in SETTINGS:
                settings.pop(name, None)
                if value is not None:
                    settings[name] = value
        return replace(self, settings=settings, **{k: v for k, v in changes.items() if k in own})

    def local_only(self) -> list[str]:
        """The settings given that only this broker's own process understands (an external
        cluster or Kafka has no equivalent: ``copy``, ``fetch_slowdown``, ...)."""
        return sorted(name for name in self.settings if SETTINGS[name].local_only)

    def command_args(self) -> list[str]:
        """The broker's command-line flags for these options (TLS files are added by the
        launcher, which creates them)."""
        args: list[str] = []
        for name, value in self.settings.items():
            item = SETTINGS[name]
            if isinstance(item.default, bool):
                if value != item.default:
                    args.append(item.flag if value else "--no-" + item.flag.removeprefix("--"))
            else:
                args += [item.flag, str(value)]
        return [*args, *self.extra_args]


class _Address:
    """``host`` and ``port`` of a broker with a ``bootstrap`` address."""

    bootstrap: str

    @property
    def host(self) -> str:
        return self.bootstrap.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])


@dataclass
class LocalBroker(_Address):
    """A broker process started by logbench on this machine, with its own log dir: what the
    reference broker and Apache Kafka (``pytest_logbench.kafka``) share. Subclasses say how
    to start one and how to tell it is ready (``start``, ``bootstrap``).

    Restarts keep the port, so clients configured with the bootstrap address reconnect.
    """

    log_dir: Path
    options: BrokerOptions = field(default_factory=BrokerOptions)
    work_dir: Path | None = None  # where stderr and TLS files go; defaults to log_dir's parent
    process: subprocess.Popen[bytes] | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    tls_files: tuple[Path, Path, Path] | None = None  # cert, key, CA
    # Called after every start and restart: memory budgets re-add the new pid, hooks fire.
    after_start: list[Callable[[Any], None]] = field(default_factory=list)
    # The cgroup bounding its memory, when broker_factory(memory_limit_bytes=...) gave one.
    memory_budget: MemoryBudget | None = None
    # The block-IO throttle giving it a slower disk, when broker_factory(disk=...) gave one.
    disk_throttle: DiskThrottle | None = None

    def __post_init__(self) -> None:
        self.work_dir = self.work_dir or self.log_dir.parent
        self._port = 0

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> LocalBroker:
        raise NotImplementedError

    def _spawn(
        self,
        command: list[str],
        *,
        stdout: int,
        env: dict | None = None,
        cwd: Path | None = None,
    ) -> Popen[bytes]:
        """Launch ``command`` with stderr appended to ``stderr_path``, dying with pytest."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"broker pid {self.process.pid} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                command,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                env=env,
                cwd=cwd,
            )
        return self.process

    def _started(self) -> None:
        for callback in self.after_start:
            callback(self)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a clean shutdown: flush, clean-shutdown markers); SIGKILL after
        ``timeout``. Returns the exit status, or None when it was not running."""
        if self.process is None:
            return None
        return self._terminate(self.process, signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: the page cache keeps what was written, the clean-shutdown marker is not
        written, so the next start recovers the log."""
        if self.process is None:
            return None
        return self._terminate(self.process, signal.SIGKILL)

    def restart(self, *, kill: bool = False) -> LocalBroker:
        """Stop (or kill) and start again on the same port and log dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def _start_failed(
        self, process: subprocess.Popen[bytes], name: str, missing: str
    ) -> BrokerStartError:
        """The error of a start that never became ready: the process exited, or it did not
        show ``missing`` within the start-up timeout (then it is killed); with its log tail."""
        if process.poll() is None:
            self._terminate(process, signal.SIGKILL)
            why = f"{missing} within {self.options.startup_timeout}s"
        else:
            why = f"exited with status {process.returncode} before it was ready"
        return BrokerStartError(f"{name} {why}; log tail:\n{self.stderr_tail()}")

    def _terminate(
        self, process: subprocess.Popen[bytes], signum: int, timeout: float = 15.0
    ) -> int:
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- what tests read -----------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return self.ready["bootstrap"]

    @property
    def pid(self) -> int:
        assert self.process is not None, "broker not started"
        return self.process.pid

    @property
    def stderr_path(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / f"{self.log_dir.name}.stderr.log"

    @property
    def ca_path(self) -> Path:
        """The CA certificate a TLS client must trust (TLS brokers only)."""
        return self._tls()[2]

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty stderr)"

    def segment_files(self, topic: str | None = None, partition: int | None = None) -> list[Path]:
        """The ``.log`` segment files, oldest first, of one partition, a topic, or all."""
        found = []
        for directory in sorted(self.log_dir.iterdir()):
            name, _, index = directory.name.rpartition("-")
            if not directory.is_dir() or not index.isdigit() or name.startswith("__"):
                continue
            if topic is not None and name != topic:
                continue
            if partition is not None and int(index) != partition:
                continue
            found += sorted(directory.glob("*.log"))
        return found

    def _tls(self) -> tuple[Path, Path, Path]:
        if self.tls_files is None:
            import trustme  # a TLS broker needs a CA and a certificate for 127.0.0.1

            assert self.work_dir is not None
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            paths = tuple(
                self.work_dir / f"{self.log_dir.name}.{n}.pem" for n in ("cert", "key", "ca")
            )
            cert.cert_chain_pems[0].write_to_path(str(paths[0]))
            for blob in cert.cert_chain_pems[1:]:
                blob.write_to_path(str(paths[0]), append=True)
            cert.private_key_pem.write_to_path(str(paths[1]))
            ca.cert_pem.write_to_path(str(paths[2]))
            os.chmod(paths[1], 0o600)
            self.tls_files = paths  # type: ignore[assignment]
        assert self.tls_files is not None
        return self.tls_files


class _Counters:
    """``metrics()`` and ``metric()`` of a broker whose ``metrics_url`` serves the reference
    broker's metrics (``/metrics`` as Prometheus text, ``/metrics.json`` beside it)."""

    metrics_url: str

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """The broker's metrics snapshot (see ``reference_broker.metrics.METRIC_HELP``)."""
        url = self.metrics_url.removesuffix("/metrics") + "/metrics.json"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def metric(self, name: str, /, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return metric_sum(self.metrics(), name, labels)


@dataclass
class ReferenceBroker(_Counters, LocalBroker):
    """A reference broker process (``python -m reference_broker``); started by ``start()``.

    ``code`` runs the broker's code from another directory (one holding a ``reference_broker``
    package, e.g. an earlier revision's: ``pytest_logbench.revisions``) instead of the
    installed one; ``revision`` names the commit it came from."""

    code: Path | None = None
    revision: str | None = None

    def start(self) -> ReferenceBroker:
        """Launch the process and wait for its READY line (or fail with its stderr tail)."""
        command = [
            sys.executable,
            "-m",
            "reference_broker",
            "--log-dir",
            str(self.log_dir),
            "--port",
            str(self._port),
            "--metrics-port",
            "0",
            "--log-level",
            "INFO",
            *self.options.command_args(),
        ]
        if self.options.tls:
            cert, key, _ = self._tls()
            command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        env = broker_python_env()
        if self.code is not None:  # `-m` puts the working directory first on the import path
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(self.code), env.get("PYTHONPATH")])
            )
        process = self._spawn(command, stdout=subprocess.PIPE, env=env, cwd=self.code)
        self.ready = self._await_ready(process)
        self._port = int(self.ready["bootstrap"].rsplit(":", 1)[1])
        self._started()
        return self

    def _await_ready(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert process.stdout is not None
        deadline = time.monotonic() + self.options.startup_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([process.stdout], [], [], remaining)
            if not readable:
                break
            line = process.stdout.readline().decode(errors="replace")
            if line.startswith(READY_PREFIX):
                return json.loads(line[len(READY_PREFIX) :])
            if not line:  # stdout closed: the process is exiting
                process.wait(timeout=5)
                break
        raise self._start_failed(process, "reference broker", "printed no READY line")

    @property
    def metrics_url(self) -> str:
        return self.ready["metrics"]


@dataclass
class ExternalBroker(_Counters, _Address):
    """A cluster started elsewhere (``--logbench-bootstrap``). Tests get its address; its
    segment files only when ``log_dir`` says where a local broker keeps its data, its counters
    only when ``metrics_url`` names its metrics endpoint (``--logbench-metrics-url``).

    ``topic_configs`` and ``partitions`` are what ``broker_factory``'s topic-level settings
    became (``segment_bytes=`` -> ``segment.bytes``): a cluster's broker settings cannot be
    changed from a test, but a topic's can, when it is created (``create_topic``).
    """

    bootstrap: str
    log_dir: Path | None = None
    metrics_url: str | None = None  # type: ignore[assignment]
    topic_configs: dict[str, str] = field(default_factory=dict)
    partitions: int | None = None

    def _local_only(self, what: str) -> LocalOnly:
        return LocalOnly(
            f"{what} needs a broker process started by logbench; this run uses the "
            f"external cluster at {self.bootstrap} (--logbench-bootstrap)"
        )

    @property
    def shapes_topics(self) -> bool:
        """Whether topics of this view must be created with configs or a partition count."""
        return bool(self.topic_configs) or self.partitions is not None

    def create_topic(self, name: str) -> None:
        """Create ``name`` with this view's topic configs and partition count."""
        from pytest_logbench.client import HarnessClient

        with HarnessClient(self.bootstrap) as client:
            client.create_topic(name, self.partitions or 1, self.topic_configs, exist_ok=False)

    def segment_files(self, topic: str | None = None, partition: int | None = None) -> list[Path]:
        if self.log_dir is None:
            raise LocalOnly(
                f"the page cache of {self.bootstrap}'s segments needs "
                "--logbench-log-dir to say where the broker keeps its data"
            )
        return LocalBroker(self.log_dir).segment_files(topic, partition)

    def kill(self) -> None:
        raise self._local_only("kill()")

    def stop(self) -> None:
        raise self._local_only("stop()")

    def restart(self, *, kill: bool = False) -> None:
        raise self._local_only("restart()")

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        if self.metrics_url is None:
            raise LocalOnly(
                f"the counters of {self.bootstrap} need --logbench-metrics-url to name its "
                "metrics endpoint"
            )
        return super().metrics()

    @property
    def pid(self) -> int:
        raise self._local_only("the broker pid")
