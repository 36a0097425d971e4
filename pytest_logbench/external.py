"""Running the same tests against an external cluster (``--logbench-bootstrap``).

Three jobs: check at session start that the cluster answers (one usage error, not a refused
connection in every test); decide *before* a test runs whether it needs what only a broker
started by logbench gives, so it skips before doing any work; and turn ``broker_factory``'s
topic-level settings into the topic configs Kafka accepts at CreateTopics.

What a test needs comes from its ``logbench_local`` marker and from the test itself: the
fixtures it requests and the calls in its own function body (``broker.kill()``,
``broker.metric(...)``, ``result.describe("cpu")``, ``broker_factory(copy=True)``...). Calls
inside helpers it calls are not seen; those still skip when they raise ``LocalOnly``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import socket
import textwrap
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_logbench.brokers import BrokerOptions, ExternalBroker
from pytest_logbench.options import setting
from pytest_logbench.topics import topics_of
from reference_broker.config import SETTINGS
from reference_broker.log import LogConfig

NEEDS = {
    "process": "a broker process started by logbench",
    "log_dir": "the broker's log dir (--logbench-log-dir)",
    "metrics": "the broker's logbench_* counters (--logbench-metrics-url)",
}
"""What only a broker started by logbench gives, and the option that provides it otherwise."""

PROVIDED_BY = {"log_dir": "log_dir", "metrics": "metrics_url"}
"""The logbench setting that provides a need against an external cluster."""

_ATTRIBUTES = {
    "kill": "process",
    "restart": "process",
    "pid": "process",
    "stderr_tail": "process",
    "memory_budget": "process",
    "ca_path": "process",
    "cpu_per_gb": "process",
    "metric": "metrics",
    "metrics": "metrics",
    "segment_files": "log_dir",
}
_FUNCTIONS = {
    "assert_zero_copy": ("process",),
    "assert_cheaper": ("process",),
    "assert_fetch_reads": ("metrics",),
    "assert_served_from_cache": ("log_dir", "metrics"),
}
# Result metrics measured only on a local broker process (CPU readings, syscalls, controls).
_LOCAL_METRICS = {"cpu", "syscalls", "relative", "relative_cpu"}
_FIXTURES = {"page_cache": ("log_dir",)}
_BROKER_FIXTURES = {"broker", "broker_factory", "producer", "consumer"}


class ExternalSkip(pytest.skip.Exception):
    """A skip because the external cluster lacks a local power; its report points at the
    test, not at the plugin line that raised it (``pytest_runtest_makereport``)."""


def skip(reason: str) -> None:
    raise ExternalSkip(reason)


def check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise ``pytest.UsageError`` unless a TCP connection to ``bootstrap`` succeeds."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise pytest.UsageError(
            f"--logbench-bootstrap {bootstrap}: cannot connect ({exc}); is the cluster running "
            "and the address right?"
        ) from None


def needs_of(item: pytest.Item) -> dict[str, list[str]]:
    """What ``item`` needs of a local broker: need -> the things in the test that ask for it."""
    found: dict[str, list[str]] = {}
    for marker in item.iter_markers("logbench_local"):
        for need in marker.args or ("process",):
            if need not in NEEDS:
                raise ValueError(
                    f"logbench_local({need!r}): unknown need; use one of {sorted(NEEDS)}"
                )
            found.setdefault(need, []).append("the logbench_local marker")
    fixtures = set(getattr(item, "fixturenames", ()))
    function = getattr(item, "function", None)
    if not fixtures & _BROKER_FIXTURES or function is None:
        return found
    for name in sorted(fixtures & set(_FIXTURES)):
        for need in _FIXTURES[name]:
            found.setdefault(need, []).append(f"the {name} fixture")
    for need, what in _needs_in_code(function):
        found.setdefault(need, []).append(what)
    return found


@functools.cache
def _needs_in_code(function: Any) -> tuple[tuple[str, str], ...]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):  # no source (built at run time): nothing seen
        return ()
    return tuple(dict.fromkeys(_walk(tree)))


def _walk(tree: ast.AST) -> Iterable[tuple[str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _ATTRIBUTES:
            yield _ATTRIBUTES[node.attr], f".{node.attr}"
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        for need in _FUNCTIONS.get(name or "", ()):
            yield need, f"{name}()"
        if name in ("describe", "stats", "values"):
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and arg.value in _LOCAL_METRICS:
                    yield "process", f'{name}("{arg.value}")'
        if name == "FetchWorkload" and not _keyword_is(node, "cache", "as-is"):
            yield "log_dir", "FetchWorkload(cache=warm or cold)"
        if name == "broker_factory":
            for keyword in node.keywords:
                if keyword.arg is not None and _local_option(keyword):
                    yield "process", f"broker_factory({keyword.arg}=...)"


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value == value
        for k in call.keywords
    )


LOCAL_FIELDS = ("tls", "memory_limit_bytes", "disk", "extra_args")
"""``BrokerOptions`` fields (besides local-only settings) that need a broker logbench starts."""


def _local_option(keyword: ast.keyword) -> bool:
    """Whether a ``broker_factory`` keyword asks for something only a local broker has."""
    if keyword.arg in LOCAL_FIELDS:
        return not (isinstance(keyword.value, ast.Constant) and not keyword.value.value)
    setting = SETTINGS.get(keyword.arg or "")
    return setting is not None and setting.local_only


def skip_unless_provided(item: pytest.Item, bootstrap: str, provided: set[str]) -> None:
    """Skip ``item`` before it runs when it needs what this external run does not provide."""
    missing = {need: why for need, why in needs_of(item).items() if need not in provided}
    if missing:
        wants = "; ".join(
            f"{NEEDS[need]} (for {', '.join(dict.fromkeys(why))})" for need, why in missing.items()
        )
        skip(f"needs {wants}; this run uses the external cluster at {bootstrap}")


def external_view(options: BrokerOptions, bootstrap: str) -> dict[str, Any]:
    """``ExternalBroker`` fields for ``broker_factory`` options: topic-level settings as topic
    configs, ``num_partitions`` as the partition count. Local-only options skip the test;
    broker-wide settings, which a test cannot change on a running cluster, warn."""
    local = options.local_only() + [k for k in LOCAL_FIELDS if getattr(options, k)]
    if local:
        skip(
            f"options {local} need a reference broker started by logbench; this run uses the "
            f"external cluster at {bootstrap}"
        )
    topic_level = {n: v for n, v in options.settings.items() if SETTINGS[n].scope == "log"}
    defaults = LogConfig().topic_configs()
    configs = {
        key: value
        for key, value in LogConfig(**topic_level).topic_configs().items()
        if defaults[key] != value
    }
    kept = sorted(
        n for n in options.settings if SETTINGS[n].scope != "log" and n != "num_partitions"
    )
    if kept:
        warnings.warn(
            f"broker settings {kept} stay the external cluster's own: a test can set topic "
            "configs, not a running cluster's broker settings",
            pytest.PytestWarning,
            stacklevel=4,  # the test's call of broker_factory
        )
    return {"topic_configs": configs, "partitions": options.num_partitions}


def external_broker(
    request: pytest.FixtureRequest, bootstrap: str, options: BrokerOptions
) -> ExternalBroker:
    """The external cluster as this test's broker, with its topic-level settings."""
    config = request.config
    log_dir, metrics_url = setting(config, "log_dir"), setting(config, "metrics_url")
    shape = external_view(options, bootstrap)
    broker = ExternalBroker(bootstrap, Path(log_dir) if log_dir else None, metrics_url, **shape)
    if broker.shapes_topics:
        topics = topics_of(request)
        shape = (broker.topic_configs, broker.partitions)
        if shaped := [(b.topic_configs, b.partitions) for b in topics.brokers]:
            if shape != shaped[0]:  # one cluster: its topics are created once
                raise ValueError(
                    f"this test's topics are already created with configs {shaped[0][0]} "
                    f"and {shaped[0][1]} partitions on the external cluster; a second "
                    f"broker_factory call asks for {shape[0]} and {shape[1]}"
                )
            return broker
        if not topics.names:
            warnings.warn(
                f"{request.node.nodeid}: topic settings {broker.topic_configs} (partitions "
                f"{broker.partitions}) apply on the external cluster to the topics of the "
                "topic / topic_factory fixtures only, and this test has none yet",
                pytest.PytestWarning,
                stacklevel=3,
            )
        topics.attach(broker)
    return broker
