"""Apache Kafka's jars, pinned and fetched from Maven Central once into a cache directory.

Why Maven and not a release tarball: Maven Central is the one place this project's machines
reach that serves Kafka, and Maven resolves the broker's runtime classpath for us. The small
``pom`` project in ``kafka/pom.xml`` names the broker (``kafka_2.13``) and the log4j2 binding
that Kafka's POM leaves to its tarball; ``mvn dependency:copy-dependencies`` gathers the jars.

The cache (``~/.cache/logbench/kafka-<version>-<pom digest>/``, or ``$LOGBENCH_KAFKA_HOME``)
is filled under a file lock and marked complete only when every jar is in place, so parallel
test workers and an interrupted fetch never leave a half classpath behind. The mark names the
pom's digest: a dependency added to the pom fetches again instead of running on a classpath
without it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_logbench.brokers import user_cache_dir

# Keep in step with <kafka.version> in kafka/pom.xml.
KAFKA_VERSION = "4.2.0"
POM = Path(__file__).resolve().parents[2] / "kafka" / "pom.xml"
_COMPLETE = ".complete"
_FETCH_SECONDS = 900


class KafkaUnavailable(RuntimeError):
    """Kafka cannot run here (no java, no mvn, no pom, or the fetch failed); says why."""


def kafka_home() -> Path:
    """Where the jars of the pinned Kafka are (or will be) cached: a directory per pom, so
    checkouts pinning different jars never overwrite each other's classpath."""
    configured = os.environ.get("LOGBENCH_KAFKA_HOME")
    if configured:
        return Path(configured)
    if POM.is_file():
        return user_cache_dir() / f"kafka-{KAFKA_VERSION}-{_pom_digest()}"
    return user_cache_dir() / f"kafka-{KAFKA_VERSION}"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def lib_dir() -> Path:
    return kafka_home() / "lib"


def _completion_mark() -> str:
    """What ``.complete`` holds once every jar the pom names is in place."""
    return f"{KAFKA_VERSION} pom {_pom_digest()}"


JMX_AGENT = "jmx_prometheus_javaagent"


def classpath() -> str:
    """Kafka's runtime classpath in the cache (fetched first if need be): every jar but the
    JMX exporter, which is loaded as an agent (``agent_jar``)."""
    jars = sorted(str(p) for p in fetch().glob("*.jar") if not p.name.startswith(JMX_AGENT))
    return os.pathsep.join(jars)


def agent_jar() -> Path:
    """The Prometheus JMX exporter's agent jar in the cache."""
    [jar] = fetch().glob(f"{JMX_AGENT}-*.jar")
    return jar


def is_fetched() -> bool:
    """Whether every jar the pinned pom names is in the cache (without the pom, as in an
    installed wheel, a cache of the pinned version is all there is to go by)."""
    try:
        mark = (kafka_home() / _COMPLETE).read_text().strip()
    except FileNotFoundError:
        return False
    if POM.is_file():
        return mark == _completion_mark()
    return mark.split(" ")[0] == KAFKA_VERSION


def unavailable_reason() -> str | None:
    """Why Kafka cannot be started here, or None. Java is always needed; Maven only until
    the jars are cached."""
    if shutil.which("java") is None:
        return "Apache Kafka needs Java 17+: no `java` on PATH"
    if is_fetched():
        return None
    if shutil.which("mvn") is None:
        return (
            f"Apache Kafka {KAFKA_VERSION} is not cached in {kafka_home()} and there is no "
            "`mvn` on PATH to fetch it"
        )
    if not POM.is_file():
        return f"Apache Kafka is not cached in {kafka_home()} and {POM} (the pom) is missing"
    return None


def fetch(*, quiet: bool = False) -> Path:
    """Make sure the pinned Kafka's jars are cached; return their directory.

    Prints one progress line when it has to download (a first fetch takes tens of seconds).
    """
    if is_fetched():
        return lib_dir()
    reason = unavailable_reason()
    if reason is not None:
        raise KafkaUnavailable(reason)
    home = kafka_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be fetching: wait for it
        if not is_fetched():
            _download(home, quiet=quiet)
    return lib_dir()


def _download(home: Path, *, quiet: bool) -> None:
    if not quiet:
        print(
            f"logbench: fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into "
            f"{home} (once)...",
            file=sys.stderr,
            flush=True,
        )
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=home))
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_FETCH_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-3000:]
            raise KafkaUnavailable(
                f"fetching Kafka {KAFKA_VERSION} failed ({' '.join(command)}"
                f" exited {result.returncode}):\n{output}"
            )
        if not any(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise KafkaUnavailable(f"mvn ran but brought no kafka_2.13-{KAFKA_VERSION}.jar")
        shutil.rmtree(home / "lib", ignore_errors=True)
        staging.rename(home / "lib")
        (home / _COMPLETE).write_text(_completion_mark() + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not quiet:
        print(
            f"logbench: Apache Kafka {KAFKA_VERSION} ready in {home}", file=sys.stderr, flush=True
        )
