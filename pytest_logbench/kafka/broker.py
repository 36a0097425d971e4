"""Apache Kafka as a logbench broker: one KRaft node (broker + controller) on loopback.

``KafkaBroker`` has the reference broker's interface (``bootstrap``, ``log_dir``, ``pid``,
``start``/``stop``/``kill``/``restart``, ``segment_files``, ``stderr_tail``, TLS, memory
budgets), so fixtures, workloads and evidence run unchanged on the real thing. It runs the
pinned jars of ``jars.py`` with ``java -cp``: the first start formats the log dir
(``kafka.tools.StorageTool format --standalone``), every start runs ``kafka.Kafka`` on a
``server.properties`` written from ``BrokerOptions``.

Kafka's log (log4j2, INFO) goes to the broker's stderr file: readiness is its
``Kafka Server started`` line, and a failed start shows its tail.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pytest_logbench.brokers import (
    BrokerOptions,
    BrokerStartError,
    LocalBroker,
    ReferenceOnly,
)
from pytest_logbench.counters import metric_sum
from pytest_logbench.kafka.jars import agent_jar
from pytest_logbench.kafka.jars import classpath as kafka_classpath
from reference_broker.config import SETTINGS

READY_LINE = b"Kafka Server started"
# Options of the reference broker that Kafka has no equivalent for.
MIN_SEGMENT_BYTES = 1 << 20  # Kafka 4.x refuses a smaller log.segment.bytes
# The reference broker's fsync policies; "interval" is its default 1000 ms, "never" leaves
# flushing to the OS (Kafka's default too).
_FSYNC = {
    "always": {"log.flush.interval.messages": "1"},
    "interval": {"log.flush.interval.ms": "1000"},
    "never": {},
}
# The JVM flags of Kafka's kafka-run-class.sh, with a heap sized for a test machine.
JVM_FLAGS = (
    "-Xms512m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)  # fmt: skip
_LOG4J2 = """\
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.err.ref = STDERR
# The config dumps (hundreds of lines per start) hide the lines that matter in a tail.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""
# Every MBean, names lower-cased: kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec's
# Count becomes kafka_server_brokertopicmetrics_count{name="BytesOutPerSec"}.
_JMX_EXPORTER = "lowercaseOutputName: true\nlowercaseOutputLabelNames: true\n"


def unsupported_options(options: BrokerOptions) -> list[str]:
    """Why ``options`` cannot be honoured by Kafka: one reason per offending setting. The
    settings table says which settings are the reference broker's own (``local_only``: copy,
    fetch_slowdown, tail_window_bytes, ...) and which Kafka config each other one maps to."""
    reasons = [
        f"{name}: the reference broker's own setting; Kafka has no equivalent"
        for name in options.local_only()
    ]
    reasons += [
        f"{name}: set by the launcher" for name in options.settings if name in ("host", "port")
    ]
    if options.segment_bytes is not None and options.segment_bytes < MIN_SEGMENT_BYTES:
        reasons.append(
            f"segment_bytes={options.segment_bytes}: Kafka 4.x refuses log.segment.bytes "
            f"below {MIN_SEGMENT_BYTES} (1 MiB)"
        )
    if options.fsync is not None and options.fsync not in _FSYNC:
        reasons.append(f"fsync={options.fsync!r}: expected one of {sorted(_FSYNC)}")
    return reasons


def server_properties(options: BrokerOptions) -> dict[str, str]:
    """Kafka configs for ``options`` (without listeners and paths, which the launcher adds):
    each setting given maps to its Kafka config name in the settings table."""
    properties = {}
    for name, value in options.settings.items():
        kafka_name = SETTINGS[name].kafka
        if kafka_name is not None:
            properties[kafka_name] = str(value).lower() if isinstance(value, bool) else str(value)
    if options.retention_bytes is not None or options.retention_ms is not None:
        # Kafka checks retention every 5 minutes by default: too late for any test.
        properties.setdefault("log.retention.check.interval.ms", "1000")
    # Kafka's log tasks (retention among them) first run 30 s after start by default; a test
    # that sets retention on a topic must not wait for that. (The config is Kafka's own, for
    # tests.)
    properties.setdefault("log.initial.task.delay.ms", "0")
    properties.update(_FSYNC.get(options.fsync or "never", {}))
    for extra in options.extra_args:  # for Kafka: extra server properties, KEY=VALUE
        key, sep, value = extra.partition("=")
        if not sep:
            raise ValueError(f"Kafka extra_args are server properties KEY=VALUE, got {extra!r}")
        properties[key] = value
    return properties


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: a UUID in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel considers free now (bound to 0 together, read,
    released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class KafkaBroker(LocalBroker):
    """A single-node Apache Kafka (KRaft) process with its own log dir; ``start()`` starts it.

    Ports are chosen at the first start and kept by restarts. Kafka keeps its own metrics in
    JMX MBeans, which the Prometheus JMX exporter (a Java agent) serves at ``jmx_url``:
    ``metric()`` reads them by their Prometheus names, ``kafka_metrics()`` lists them. The
    ``logbench_*`` counters are the reference broker's: ``metrics()``, ``metrics_url`` and
    ``metric("logbench_...")`` raise ``ReferenceOnly``, which tests see as a skip.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        reasons = unsupported_options(self.options)
        if reasons:
            raise ReferenceOnly("Apache Kafka cannot honour " + "; ".join(reasons))
        self._controller_port = self._jmx_port = 0

    @property
    def config_dir(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / f"{self.log_dir.name}.kafka"

    def start(self) -> KafkaBroker:
        """Format the log dir on first use, launch Kafka, and wait until it serves requests
        (or fail with the tail of its log)."""
        classpath = kafka_classpath()
        if not self._port:
            self._port, self._controller_port, self._jmx_port = free_ports(3)
        properties = self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format(classpath, properties)
        log4j = self.config_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        exporter = self.config_dir / "jmx-exporter.yaml"
        exporter.write_text(_JMX_EXPORTER)
        flags = [*JVM_FLAGS, f"-javaagent:{agent_jar()}=127.0.0.1:{self._jmx_port}:{exporter}"]
        if self.options.memory_limit_bytes is not None:
            # Touch the whole heap before the budget takes the process: the heap is then
            # charged where the JVM started, and the budget holds Kafka's page cache, as it
            # does the reference broker's. Otherwise heap pages first touched after the move
            # fill it (seen: 29 MB of a 160 MiB budget left for the cache; 147 MB with this).
            flags.append("-XX:+AlwaysPreTouch")
        offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        command = [
            "java", *flags, f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.config_dir}", "-cp", classpath, "kafka.Kafka",
            str(properties),
        ]  # fmt: skip
        self._await_ready(self._spawn(command, stdout=subprocess.DEVNULL), offset)
        self.ready = {"bootstrap": f"127.0.0.1:{self._port}"}
        self._started()
        return self

    def _write_config(self) -> Path:
        listener = "SSL" if self.options.tls else "PLAINTEXT"
        broker, controller = f"127.0.0.1:{self._port}", f"127.0.0.1:{self._controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"{listener}://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"{listener}://{broker},CONTROLLER://{controller}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{listener}:{listener}",
            "log.dirs": str(self.log_dir),
            # One node: internal topics cannot have three replicas; one offsets partition
            # and no rebalance delay keep group tests fast.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # The reference broker's floor (Kafka's is 6 s): tests evict members in seconds.
            "group.min.session.timeout.ms": "1000",
            **self._tls_properties(),
            **server_properties(self.options),
        }
        self.config_dir.mkdir(parents=True, exist_ok=True)
        path = self.config_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path

    def _tls_properties(self) -> dict[str, str]:
        if not self.options.tls:
            return {}
        from cryptography.hazmat.primitives import serialization  # comes with trustme

        cert, key, ca = self._tls()
        # Kafka's PEM key store wants the private key as PKCS#8 (trustme writes SEC1 for EC
        # keys) and the key and the chain in one file (KIP-651).
        pkcs8 = serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        store = self.config_dir / "keystore.pem"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        store.touch(0o600)
        store.write_bytes(pkcs8 + cert.read_bytes())
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(store),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(ca),
        }

    def _format(self, classpath: str, properties: Path) -> None:
        # One cluster id in 32 begins with "-", which the tool would take for an option
        # unless it is glued to its flag.
        command = [
            "java", "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
            f"--cluster-id={new_cluster_id()}", "-c", str(properties),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[:20])
            raise BrokerStartError(
                f"formatting Kafka's log dir {self.log_dir} failed "
                f"(exit {result.returncode}):\n{output}"
            )

    def _await_ready(self, process: subprocess.Popen[bytes], offset: int) -> None:
        """Wait for this start's ``Kafka Server started`` line, reading the log from
        ``offset`` (the file keeps earlier starts' lines)."""
        deadline = time.monotonic() + self.options.startup_timeout
        with self.stderr_path.open("rb") as log:
            log.seek(offset)
            seen = b""
            while time.monotonic() < deadline:
                seen = seen[-len(READY_LINE) :] + log.read()
                if READY_LINE in seen:
                    return
                if process.poll() is not None:
                    break
                time.sleep(0.02)
        raise self._start_failed(process, "Kafka", f"logged no {READY_LINE.decode()!r}")

    @property
    def metrics_url(self) -> str:
        raise _no_counters()

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        raise _no_counters()

    @property
    def jmx_url(self) -> str:
        """Kafka's own metrics (its JMX MBeans) as Prometheus text, served by the JMX
        exporter agent the launcher loads into the JVM."""
        return f"http://127.0.0.1:{self._jmx_port}/metrics"

    def kafka_metrics(self) -> dict[str, list[dict[str, Any]]]:
        """A snapshot of Kafka's metrics, shaped as ``metrics()`` is on the reference broker:
        each sample ``{"labels": {...}, "value": v}`` under its Prometheus name, e.g.
        ``kafka_server_brokertopicmetrics_count`` with labels ``name="BytesOutPerSec"`` and,
        per topic, ``topic``."""
        with urllib.request.urlopen(self.jmx_url, timeout=10) as response:
            text = response.read().decode()
        snapshot: dict[str, list[dict[str, Any]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                snapshot.setdefault(sample.name, []).append(
                    {"labels": dict(sample.labels), "value": sample.value}
                )
        return snapshot

    def metric(self, name: str, /, **labels: str) -> float:
        """Sum of the samples of Kafka's metric ``name`` whose labels include ``labels``; the
        ``logbench_*`` counters are the reference broker's (``ReferenceOnly``)."""
        if name.startswith("logbench_"):
            raise _no_counters()
        snapshot = self.kafka_metrics()
        if name not in snapshot:
            raise KeyError(f"Kafka has no metric {name!r} (see {self.jmx_url})")
        return metric_sum(snapshot, name, labels)


def _no_counters() -> ReferenceOnly:
    return ReferenceOnly(
        "the logbench_* counters are the reference broker's; Apache Kafka's own metrics are "
        "read by broker.metric() under their JMX names (broker.kafka_metrics() lists them)"
    )
