"""Apache Kafka as a logbench broker: the launcher on the real thing (KRaft, one node).

Every test here starts a real Kafka JVM (about 2-6 s each on a busy 2-core machine), so the
read-only checks share one module-scoped broker. Without Java (or without Maven and a cached
Kafka) the tests that start Kafka skip with the reason; the others need neither.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pytest_logbench import kafka
from pytest_logbench.assertions import assert_zero_copy
from pytest_logbench.brokers import BrokerOptions, BrokerStartError, ReferenceOnly
from pytest_logbench.client import Consumer, HarnessClient, Producer
from pytest_logbench.kafka import broker as kafka_broker_module
from pytest_logbench.kafka.broker import server_properties
from pytest_logbench.syscalls import tally, tracer_support
from pytest_logbench.workloads import FetchWorkload, ProduceWorkload, client_options
from reference_broker.record_codec import build_batch
from tests.test_plugin import RECORD_PID, _recorded

confluent_kafka = pytest.importorskip("confluent_kafka")

pytest_plugins = ["pytester"]
UNAVAILABLE = kafka.unavailable_reason()
needs_kafka = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
MIB = 1 << 20


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    """One plaintext Kafka with 1 MiB segments for the checks that only read and append."""
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    work = tmp_path_factory.mktemp("kafka")
    options = BrokerOptions().with_(segment_bytes=MIB)
    broker = kafka.KafkaBroker(work / "data", options, work_dir=work)
    broker.start()
    yield broker
    broker.stop()


def _produce(bootstrap: str, topic: str, count: int, first: int = 0, **config: str) -> list[int]:
    """Produce records numbered from ``first`` with acks=all; the numbers Kafka acknowledged."""
    acked: list[int] = []

    def delivered(err, msg):
        if err is None:
            acked.append(int(msg.value()))

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", **config})
    for i in range(first, first + count):
        producer.produce(topic, str(i).encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    return acked


def _consume_all(bootstrap: str, topic: str, expected: int, **config: str) -> list[int]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **config,
        }
    )
    consumer.subscribe([topic])
    values: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(int(message.value()))
    finally:
        consumer.close()
    return values


# --- jars and options ---------------------------------------------------------------------------


def test_pom_and_launcher_pin_the_same_kafka():
    import xml.etree.ElementTree as ElementTree

    from pytest_logbench.kafka import jars

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pinned = ElementTree.parse(jars.POM).find("m:properties/m:kafka.version", ns)
    assert pinned is not None and pinned.text == jars.KAFKA_VERSION


def test_a_cache_without_its_completion_mark_is_not_used(tmp_path, monkeypatch):
    """An interrupted fetch leaves jars but no mark: it is fetched again, never half-used."""
    from pytest_logbench.kafka import jars

    monkeypatch.setenv("LOGBENCH_KAFKA_HOME", str(tmp_path))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / f"kafka_2.13-{jars.KAFKA_VERSION}.jar").touch()
    assert not jars.is_fetched()
    (tmp_path / ".complete").write_text("4.0.0\n")  # an older pin
    assert not jars.is_fetched()
    (tmp_path / ".complete").write_text(jars.KAFKA_VERSION + "\n")  # fetched by an older pom
    assert not jars.is_fetched()
    (tmp_path / ".complete").write_text(jars._completion_mark() + "\n")
    assert jars.is_fetched() and jars.fetch() == tmp_path / "lib"


def test_options_map_to_kafka_configs():
    properties = server_properties(BrokerOptions().with_(
        segment_bytes=2 * MIB, retention_bytes=5 * MIB, retention_ms=60_000, num_partitions=3,
        index_interval_bytes=4096, fsync="always", auto_create_topics=False,
        extra_args=("log.cleaner.enable=false",),
    ))  # fmt: skip
    assert properties == {
        "log.segment.bytes": str(2 * MIB), "log.retention.bytes": str(5 * MIB),
        "log.retention.ms": "60000", "num.partitions": "3",
        "log.index.interval.bytes": "4096", "log.retention.check.interval.ms": "1000",
        "log.flush.interval.messages": "1", "auto.create.topics.enable": "false",
        "log.cleaner.enable": "false", "log.initial.task.delay.ms": "0",
    }  # fmt: skip
    interval = server_properties(BrokerOptions().with_(fsync="interval"))
    assert interval["log.flush.interval.ms"] == "1000"


@pytest.mark.parametrize(
    "option",
    [{"copy": True}, {"fetch_slowdown": 2.0}, {"tail_window_bytes": 4096}, {"segment_bytes": 4096}],
)
def test_options_kafka_cannot_honour_are_refused_by_name(tmp_path, option):
    [name] = option
    with pytest.raises(ReferenceOnly, match=f"Apache Kafka cannot honour {name}"):
        kafka.KafkaBroker(tmp_path / "data", BrokerOptions().with_(**option))


def test_broker_factory_skips_options_kafka_cannot_honour(pytester):
    pytester.makepyfile("""
        def test_copy(broker_factory):
            broker_factory(kind="kafka", copy=True)
    """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*Apache Kafka cannot honour copy*"])


def test_unknown_broker_kind_is_a_usage_error(pytester):
    result = pytester.runpytest("--logbench-broker", "pulsar")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


# --- one shared broker --------------------------------------------------------------------------


@needs_kafka
def test_real_clients_produce_and_consume(kafka_broker):
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert psutil.Process(kafka_broker.pid).name() == "java"
    assert "Kafka Server started" in kafka_broker.stderr_path.read_text()
    acked = _produce(kafka_broker.bootstrap, "clients", 500)
    assert sorted(acked) == list(range(500))
    assert sorted(_consume_all(kafka_broker.bootstrap, "clients", 500)) == acked


@needs_kafka
def test_kafkas_own_metrics_are_read_through_the_jmx_exporter(kafka_broker):
    bytes_in = {"name": "BytesInPerSec", "topic": "metered"}
    count = "kafka_server_brokertopicmetrics_count"
    Producer(kafka_broker.bootstrap).produce("metered", 2 * MIB)
    assert kafka_broker.metric(count, **bytes_in) >= 2 * MIB
    assert kafka_broker.kafka_metrics()[count]  # the whole snapshot, as Kafka names it
    with pytest.raises(ReferenceOnly, match="reference broker's"):
        kafka_broker.metric("logbench_fetch_bytes_total")
    with pytest.raises(KeyError, match="no metric 'kafka_no_such_thing'"):
        kafka_broker.metric("kafka_no_such_thing")


def test_segments_are_kafka_files_and_roll_at_segment_bytes(kafka_broker):
    with HarnessClient(kafka_broker.bootstrap) as client:
        client.create_topic("rolled")
    Producer(kafka_broker.bootstrap).produce("rolled", 3 * MIB)
    files = kafka_broker.segment_files("rolled")
    assert len(files) >= 3
    assert all(f.parent == kafka_broker.log_dir / "rolled-0" for f in files)
    assert all(f.stat().st_size <= MIB for f in files[:-1])
    assert not any(f.parent.name.startswith("__") for f in kafka_broker.segment_files())


@needs_kafka
def test_a_created_topic_takes_produce_at_once(kafka_broker):
    """Kafka answers CreateTopics before its broker knows the topic; the harness client
    waits for the leaders, so a produce right after never meets UNKNOWN_TOPIC_OR_PARTITION."""
    with HarnessClient(kafka_broker.bootstrap) as client:
        for n in range(10):
            client.create_topic(f"fresh{n}", partitions=2)
            assert client.produce(f"fresh{n}", 1, build_batch([(None, b"v", [])])) == 0


@needs_kafka
def test_workloads_run_unchanged_on_kafka(kafka_broker, measure, page_cache):
    """The harness producer creates its topic as real clients do (Metadata), so workloads
    that never create one run on Kafka, whose Produce creates nothing."""
    produced = measure(ProduceWorkload(kafka_broker, "2 MiB"), rounds=1, warmup=0)
    fetched = measure(FetchWorkload(kafka_broker, "2 MiB", cache="cold"), rounds=1, warmup=0)
    assert produced.rounds and fetched.rounds
    assert page_cache.residency(kafka_broker).files


@needs_kafka
def test_counters_are_reference_only(kafka_broker):
    with pytest.raises(ReferenceOnly, match="JMX"):
        kafka_broker.metric("logbench_fetch_bytes_total")
    with pytest.raises(ReferenceOnly, match="JMX"):
        assert kafka_broker.metrics_url


def _zero_copy_window(broker, topic: str):
    options = client_options(broker)
    with HarnessClient(broker.bootstrap, **options) as client:
        client.create_topic(topic)
    Producer(broker.bootstrap, **options).produce(topic, 4 * MIB)
    consumer = Consumer(broker.bootstrap, **options)
    return lambda: consumer.consume(topic)


def test_reads_of_kafkas_internal_logs_are_not_payload_copies():
    """Kafka's broker reads its KRaft metadata log every 500 ms (NoOp records): a read of
    ``__cluster_metadata-0`` in a fetch window is not a fetched byte copied."""
    segment = "/data/{}-0/00000000000000000000.log"
    reads = [("pread64", segment.format("__cluster_metadata"), 72),
             ("pread64", segment.format("__consumer_offsets"), 4096),
             ("pread64", segment.format("events"), 4096)]  # fmt: skip
    counted = tally(reads, "perf")
    assert (counted.copied_calls, counted.copied_bytes) == (1, 4096)


def _judged_on_the_trace(broker):
    """assert_zero_copy on Kafka, where a tracer is available: a ReferenceOnly (Kafka has no
    logbench counters) is a failure here, not the skip the plugin would make of it."""
    try:
        return assert_zero_copy(broker, during=_zero_copy_window(broker, "zc"))
    except ReferenceOnly as exc:
        pytest.fail(f"no verdict from the trace: {exc}")


@needs_kafka
@pytest.mark.skipif(
    not tracer_support("perf-record")[0] and not tracer_support("strace")[0],
    reason="no tracer: a Kafka broker has no counters to judge zero-copy by",
)
def test_plaintext_fetch_is_zero_copy(kafka_broker):
    report = _judged_on_the_trace(kafka_broker)
    assert report.sent is None and report.trace is not None
    assert report.trace.sendfile_bytes >= 4 * MIB


# --- brokers of their own -----------------------------------------------------------------------


@needs_kafka
@pytest.mark.slow
def test_tls_listener_serves_clients_and_is_not_zero_copy(broker_factory):
    broker = broker_factory(kind="kafka", tls=True)
    assert client_options(broker) == {"cafile": str(broker.ca_path)}
    tls = {"security.protocol": "SSL", "ssl.ca.location": str(broker.ca_path)}
    acked = _produce(broker.bootstrap, "secret", 100, **tls)
    assert sorted(_consume_all(broker.bootstrap, "secret", 100, **tls)) == sorted(acked)
    if tracer_support("perf-record")[0] or tracer_support("strace")[0]:
        with pytest.raises(AssertionError, match="NOT zero-copy"):
            _judged_on_the_trace(broker)


@needs_kafka
@pytest.mark.slow
def test_stop_and_kill_then_restart_keep_every_acknowledged_record(broker_factory):
    broker = broker_factory(kind="kafka")
    bootstrap, first_pid = broker.bootstrap, broker.pid
    acked = _produce(broker.bootstrap, "durable", 1000)
    assert broker.stop() is not None and not broker.running
    broker.start()
    acked += _produce(broker.bootstrap, "durable", 1000, first=1000)
    broker.kill()
    assert not broker.running
    broker.start()
    assert broker.bootstrap == bootstrap and broker.pid != first_pid
    assert sorted(acked) == list(range(2000))
    assert sorted(_consume_all(broker.bootstrap, "durable", 2000)) == sorted(acked)


@needs_kafka
@pytest.mark.slow
def test_memory_budget_takes_the_jvm_across_restarts(broker_factory):
    from pytest_logbench.memory import cgroup_support

    if not cgroup_support()[0]:
        pytest.skip(f"memory budget unavailable: {cgroup_support()[1]}")
    budget = 160 * MIB
    broker = broker_factory(kind="kafka", memory_limit_bytes=budget)
    assert broker.memory_budget.pids() == [broker.pid]
    broker.restart(kill=True)
    assert broker.memory_budget.pids() == [broker.pid]
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("budgeted")
    Producer(broker.bootstrap).produce("budgeted", 2 * budget)
    usage = broker.memory_budget.usage()
    # The budget holds Kafka's page cache, not its heap (touched before the JVM joined it).
    assert usage["usage_bytes"] <= budget
    assert usage["page_cache_bytes"] > budget // 2, usage


@needs_kafka
@pytest.mark.slow
def test_a_cluster_id_that_looks_like_an_option_is_formatted(tmp_path, monkeypatch):
    monkeypatch.setattr(kafka_broker_module, "new_cluster_id", lambda: "-ABCDEFGHIJKLMNOPQRSTU")
    broker = kafka.KafkaBroker(tmp_path / "data", BrokerOptions()).start()
    try:
        assert (
            "cluster.id=-ABCDEFGHIJKLMNOPQRSTU" in (broker.log_dir / "meta.properties").read_text()
        )
    finally:
        broker.stop()


@needs_kafka
def test_start_failure_shows_kafkas_own_words(tmp_path):
    broker = kafka.KafkaBroker(tmp_path / "data", BrokerOptions().with_(
        extra_args=("log.segment.bytes=lots",)))  # fmt: skip
    with pytest.raises(BrokerStartError, match="Invalid value lots for configuration"):
        broker.start()


# --- the plugin with --logbench-broker=kafka ---------------------------------------------------

BROKER_AGNOSTIC = """
from conftest import record
from pytest_logbench.client import HarnessClient, Producer, Consumer

def test_it(broker):
    record(broker)
    with HarnessClient(broker.bootstrap) as client:
        client.create_topic("t")
    Producer(broker.bootstrap).produce("t", 1 << 20)
    assert Consumer(broker.bootstrap).consume("t").bytes >= 1 << 20
    assert {passes}
"""


def _gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@needs_kafka
@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["passes", "fails"])
def test_broker_agnostic_test_runs_on_kafka_and_cleans_up(pytester, monkeypatch, outcome):
    record = pytester.path / "record.json"
    monkeypatch.setenv("LOGBENCH_RECORD", str(record))
    pytester.makeconftest(RECORD_PID)
    pytester.makepyfile(BROKER_AGNOSTIC.format(passes=outcome == "passes"))
    result = pytester.runpytest("--logbench-broker=kafka")
    result.assert_outcomes(**{"passed" if outcome == "passes" else "failed": 1})
    pid, log_dir = _recorded(record)
    assert _gone(pid)
    assert not log_dir.exists()


@needs_kafka
@pytest.mark.slow
@pytest.mark.parametrize("ending", ["timeout", "ctrl-c"])
def test_kafka_dies_with_an_interrupted_run(pytester, tmp_path, ending):
    """pytest-timeout's thread method exits the process without teardown: Kafka dies with
    it (PR_SET_PDEATHSIG); Ctrl-C unwinds through teardown, which stops it."""
    record = tmp_path / "record.json"
    pytester.makeconftest(RECORD_PID)
    pytester.makepyfile("""
        import time
        from conftest import record

        def test_waits(broker):
            record(broker)
            time.sleep(120)
    """)
    args = ["--logbench-broker=kafka", "-p", "no:cacheprovider"]
    if ending == "timeout":
        args += ["--timeout", "15", "--timeout-method", "thread"]
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, str(pytester.path)], cwd=pytester.path,
        env={**os.environ, "LOGBENCH_RECORD": str(record)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists(), "the inner test never started its broker"
        if ending == "ctrl-c":
            inner.send_signal(signal.SIGINT)
        inner.wait(timeout=60)
    finally:
        inner.kill()
    pid, log_dir = _recorded(record)
    assert _gone(pid)
    if ending == "ctrl-c":
        assert not log_dir.exists()
