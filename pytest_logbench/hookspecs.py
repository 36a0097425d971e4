"""Hooks other plugins implement to change how logbench launches brokers and where results go.

Implement them in a ``conftest.py`` or a plugin module; pytest registers them with logbench's
hook specs through ``pytest_addhooks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_logbench.brokers import BrokerOptions
    from pytest_logbench.contract import LocalBroker
    from pytest_logbench.results import Result


@pytest.hookspec(firstresult=True)
def pytest_logbench_launch_broker(
    log_dir: Path, options: BrokerOptions, work_dir: Path
) -> LocalBroker | None:
    """Return a broker for a test, not yet started: the fixture calls its ``start()``.

    The first non-None result wins, so a plugin can launch Redpanda or a Kafka binary instead
    of the reference broker. The object needs ``start()`` (returning itself once clients can
    connect), ``stop()``, ``bootstrap`` and an ``after_start`` list of callables it calls with
    itself after every start; the local powers (``kill``, ``restart``, ``segment_files``,
    ``metrics``, ``pid``) are used by the tests that need them. ``options`` is a
    ``pytest_logbench.brokers.BrokerOptions``.
    """


@pytest.hookspec
def pytest_logbench_broker_ready(broker: LocalBroker) -> None:
    """Called each time a broker launched by the fixtures became ready (restarts included)."""


@pytest.hookspec
def pytest_logbench_result(result: Result, nodeid: str) -> None:
    """Called with each measurement result a test records (result sinks: dashboards, files)."""
