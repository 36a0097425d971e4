"""Kafka clients outside Python, behind one small interface: kcat (librdkafka's command-line
tool), kafkajs (Node) and Apache Kafka's Java client.

Each runs as a process per operation: kcat with its own flags, kafkajs and the Java client as
the probe programs in ``tests/clients/`` (one command a run, consumed records printed one a
line as ``OFFSET KEYHEX VALUEHEX``). Keys and values are bytes end to end, so tests can check
that what a client reads back is byte for byte what it sent. Where a tool is missing,
``unavailable()`` says why and what installs it (``.ci/run`` does, in CI).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

Record = tuple[bytes | None, bytes | None]
Consumed = tuple[int, bytes | None, bytes | None]

CLIENTS_DIR = Path(__file__).parent / "clients"
TIMEOUT_S = 120.0
KCAT_KEY_DELIMITER = b"\x1f"
KCAT_RECORD_DELIMITER = b"\x1e"


def _run(command: list[str], stdin: bytes = b"") -> bytes:
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")[-3000:]
        raise AssertionError(f"{command[:3]} exited {done.returncode}: {stderr}")
    return done.stdout


class ExternalClient:
    """What a test asks of each client; subclasses say how their tool does it."""

    name = ""

    def unavailable(self) -> str | None:
        """Why this client cannot run here (a skip reason), or None."""
        raise NotImplementedError

    def produce(self, bootstrap: str, topic: str, records: list[Record]) -> None:
        """Produce ``records`` to partition 0, acks=all, and wait for every acknowledgement."""
        raise NotImplementedError

    def consume(self, bootstrap: str, topic: str, offset: int, count: int) -> list[Consumed]:
        """Read ``count`` records of partition 0 from ``offset``, without a group."""
        raise NotImplementedError

    def group_consume(self, bootstrap: str, group: str, topic: str, count: int) -> list[Consumed]:
        """Join ``group`` subscribed to ``topic``, read ``count`` records from the group's
        committed position (else the earliest), commit the position after them, leave."""
        raise NotImplementedError


class Kcat(ExternalClient):
    """kcat: records go in split by ASCII record and unit separators (so keys and values may
    hold newlines), empty fields as null (``-Z``); consumed records come out with their key and
    value lengths first, so any bytes can be split off exactly."""

    name = "kcat"
    _FORMAT = "%o %K %S %k%s\n"

    def unavailable(self) -> str | None:
        return None if shutil.which("kcat") else "kcat is not installed (apt-get install kcat)"

    def produce(self, bootstrap: str, topic: str, records: list[Record]) -> None:
        stdin = b"".join(
            (k or b"") + KCAT_KEY_DELIMITER + (v or b"") + KCAT_RECORD_DELIMITER for k, v in records
        )
        flags = ["-K", KCAT_KEY_DELIMITER.decode(), "-D", KCAT_RECORD_DELIMITER.decode(), "-Z"]
        _run(["kcat", "-b", bootstrap, "-t", topic, "-p", "0", "-P", *flags], stdin)

    def consume(self, bootstrap: str, topic: str, offset: int, count: int) -> list[Consumed]:
        command = ["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", "0", "-o", str(offset)]
        return self._parse(_run([*command, "-c", str(count), "-f", self._FORMAT]))

    def group_consume(self, bootstrap: str, group: str, topic: str, count: int) -> list[Consumed]:
        # The balanced consumer commits what it consumed when it closes after -c records.
        command = ["kcat", "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest"]
        return self._parse(_run([*command, "-c", str(count), "-f", self._FORMAT, topic]))

    @staticmethod
    def _parse(out: bytes) -> list[Consumed]:
        consumed, pos = [], 0
        while pos < len(out):
            fields = []
            for _ in range(3):
                end = out.index(b" ", pos)
                fields.append(int(out[pos:end]))
                pos = end + 1
            offset, key_length, value_length = fields
            key = None if key_length < 0 else out[pos : pos + key_length]
            pos += max(key_length, 0)
            value = None if value_length < 0 else out[pos : pos + value_length]
            pos += max(value_length, 0) + 1  # and the newline
            consumed.append((offset, key, value))
        return consumed


class _Probe(ExternalClient):
    """A client driven through a probe program of ``tests/clients``."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def produce(self, bootstrap: str, topic: str, records: list[Record]) -> None:
        hexed = [f"{_hex(k)}:{_hex(v)}" for k, v in records]
        _run([*self.command(), "produce", bootstrap, topic, *hexed])

    def consume(self, bootstrap: str, topic: str, offset: int, count: int) -> list[Consumed]:
        return _parse_lines(
            _run([*self.command(), "consume", bootstrap, topic, str(offset), str(count)])
        )

    def group_consume(self, bootstrap: str, group: str, topic: str, count: int) -> list[Consumed]:
        return _parse_lines(_run([*self.command(), "group", bootstrap, group, topic, str(count)]))

    def list_groups(self, bootstrap: str) -> set[str]:
        """The group ids the client's admin lists (ListGroups)."""
        return set(_run([*self.command(), "list", bootstrap]).decode().split())

    def describe_group(self, bootstrap: str, group: str) -> tuple[str, int]:
        """The group's state and member count as the client's admin describes it."""
        state, members = _run([*self.command(), "describe", bootstrap, group]).decode().split()
        return state, int(members)

    def delete_group(self, bootstrap: str, group: str) -> str:
        """ "OK", or the client's name for the error the broker answered."""
        return _run([*self.command(), "delete", bootstrap, group]).decode().strip()


class Kafkajs(_Probe):
    name = "kafkajs"
    directory = CLIENTS_DIR / "node"

    def unavailable(self) -> str | None:
        if not shutil.which("node"):
            return "node is not installed"
        if not (self.directory / "node_modules" / "kafkajs").is_dir():
            return f"kafkajs is not installed: npm ci --prefix {self.directory}"
        return None

    def command(self) -> list[str]:
        return ["node", str(self.directory / "probe.js")]

    def reset_offsets(self, bootstrap: str, group: str, topic: str) -> None:
        """admin.resetOffsets to the earliest offsets (kafkajs describes the group first)."""
        _run([*self.command(), "reset", bootstrap, group, topic])


class JavaClient(_Probe):
    """Apache Kafka's Java client, from the jars logbench caches for its Kafka broker kind,
    and the probe compiled once per process into ``build_dir``."""

    name = "java"
    source = CLIENTS_DIR / "java" / "ClientProbe.java"
    _JARS = ("kafka-clients-", "slf4j-api-", "lz4-java-", "snappy-java-", "zstd-jni-")

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = build_dir
        self._classpath: str | None = None

    def unavailable(self) -> str | None:
        from pytest_logbench.kafka import jars

        if not (shutil.which("java") and shutil.which("javac")):
            return "java and javac are not installed"
        return jars.unavailable_reason()

    def delete_offsets(self, bootstrap: str, group: str, topic: str) -> str:
        """OffsetDelete of partition 0: "OK", or the client's name for the error."""
        return _run([*self.command(), "delete-offsets", bootstrap, group, topic]).decode().strip()

    def command(self) -> list[str]:
        if self._classpath is None:
            from pytest_logbench.kafka import jars

            libs = [
                p for p in sorted(jars.lib_dir().glob("*.jar")) if p.name.startswith(self._JARS)
            ]
            classpath = ":".join(str(p) for p in libs)
            _run(["javac", "-d", str(self.build_dir), "-cp", classpath, str(self.source)])
            self._classpath = f"{self.build_dir}:{classpath}"
        return ["java", "-cp", self._classpath, "ClientProbe"]


def ready(client: ExternalClient) -> ExternalClient:
    """``client``, or the test skips with the reason it cannot run here."""
    import pytest

    reason = client.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return client


def _hex(data: bytes | None) -> str:
    return "-" if data is None else data.hex()


def _parse_lines(out: bytes) -> list[Consumed]:
    def unhex(text: str) -> bytes | None:
        return None if text == "-" else bytes.fromhex(text)

    consumed = []
    for line in out.decode().splitlines():
        offset, key, value = line.split(" ")
        consumed.append((int(offset), unhex(key), unhex(value)))
    return consumed
